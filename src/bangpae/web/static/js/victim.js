// The protected person's app: status per order, her own location, SOS, quick exit.
import {
  api,
  ApiError,
  bearingDeg,
  clock,
  compass,
  distanceM,
  km,
  liveStream,
  loadLang,
  login,
  preferredLang,
  registerWorker,
  session,
  show,
  t,
} from "./common.js";
import { MapView } from "./map.js";

const $ = (id) => document.getElementById(id);
const SEVERITY = { clear: 0, notify: 1, reveal: 2, breach: 3, uncertain: 4 };
const HOLD_MS = 2000; // SOS needs a press this long, so a pocket cannot send one
const SOS_QUEUE = "sosQueue";

const state = {
  orders: [],
  tier: null,
  me: null, // her latest position from the phone
  interval: 60, // seconds between her location reports (15 while he is near)
  sent: 0, // reports sent since sharing started
  lastFixSent: 0, // the reading time of the last report sent
  confirmPending: false, // the next reading confirms her track
  lastSent: 0,
  watch: null,
  refresh: null,
  stream: null,
  map: null,
  registration: null,
  liveSince: null,
  connection: "connecting",
  lastMessage: null,
  receivedAt: Date.now(),
  breachMinimised: false,
  push: null, // this browser's push subscription, when the server can reach it
};

// -- screens ---------------------------------------------------------------------------

function screen(name) {
  for (const id of ["login", "onboarding", "status", "help", "accesses"]) show($(id), id === name);
  if (name === "accesses") loadAccesses();
  if (name === "status" && state.map) setTimeout(() => state.map.resize(), 0);
}

function worst(orders) {
  return orders.reduce(
    (a, o) => (a === null || SEVERITY[o.tier] > SEVERITY[a.tier] ? o : a),
    null,
  );
}

function render() {
  const o = worst(state.orders);
  const tier = o ? o.tier : "clear";
  document.body.dataset.tier = tier;
  const card = $("tier-card");
  card.className = `card tier-${tier}`;
  $("tier-title").textContent = t(`tier_${tier}_title`);
  $("tier-detail").textContent = detail(o);
  $("advice").textContent = o ? advice(o) : t("tier_clear_advice");
  renderFacts(o);
  renderMap(o);
  renderBreach(o);
  renderOthers(o);
}

function detail(o) {
  if (!o) return t("no_orders");
  if (o.tier === "notify") return t("tier_notify_detail", { distance: km(o.distance_m) });
  if (o.tier === "reveal" || o.tier === "breach") {
    if (o.position_paused) return t("position_paused", { distance: km(o.distance_m) });
    // near, but beyond what may be disclosed: only a coarse distance (docs/disclosure.md)
    if (!o.offender) return t("tier_close_detail", { distance: km(o.distance_m) });
    return t("tier_reveal_detail", { distance: km(o.distance_m) });
  }
  if (o.tier === "uncertain") {
    return o.signal_lost_at
      ? t("tier_uncertain_detail", { time: clock(o.signal_lost_at) })
      : t("tier_uncertain_unknown");
  }
  return t("tier_clear_detail");
}

function advice(o) {
  if (o.tier === "reveal" && o.offender && state.me) {
    const away = (bearingDeg(state.me, o.offender) + 180) % 360;
    return t("advice_move_away", { direction: compass(away) });
  }
  return t(`tier_${o.tier}_advice`);
}

function renderFacts(o) {
  const facts = $("facts");
  const him = o && o.offender;
  show(facts, Boolean(him));
  if (!him) {
    for (const dd of facts.querySelectorAll("dd")) dd.textContent = "";
    return;
  }
  $("fact-distance").textContent = o.distance_m == null ? "—" : km(o.distance_m);
  $("fact-direction").textContent = state.me ? compass(bearingDeg(state.me, him)) : t("unknown_me");
  $("fact-heading").textContent = him.heading_deg == null ? "—" : compass(him.heading_deg);
  $("fact-speed").textContent =
    him.speed_mps == null ? "—" : `${Math.round(him.speed_mps * 3.6)} km/h`;
  $("fact-accuracy").textContent = him.accuracy_m == null ? "—" : `± ${Math.round(him.accuracy_m)} m`;
  const age = him.age_s + (Date.now() - state.receivedAt) / 1000;
  $("fact-age").textContent = t("seconds_ago", { s: Math.round(age) });
}

function renderMap(o) {
  const el = $("map");
  const him = o && o.offender;
  show(el, Boolean(him));
  if (!him) {
    if (state.map) state.map.draw([]);
    return;
  }
  if (!state.map) {
    state.map = new MapView(el, document.body.dataset.tiles, "© OpenStreetMap");
  }
  const lost = o.tier === "uncertain";
  const items = [
    {
      kind: lost ? "lastSeen" : "him",
      lat: him.lat,
      lon: him.lon,
      accuracy_m: him.accuracy_m,
      heading_deg: lost ? null : him.heading_deg,
      label: lost ? t("map_last_seen", { time: clock(him.fix_time) }) : t("map_him"),
    },
  ];
  if (state.me) items.push({ kind: "me", ...state.me, label: t("map_me") });
  state.map.resize();
  state.map.draw(items);
}

function renderBreach(o) {
  const on = Boolean(o && o.tier === "breach") && !state.breachMinimised;
  show($("breach"), on);
  if (!o || o.tier !== "breach") state.breachMinimised = false;
  if (on) {
    $("breach-detail").textContent =
      o.distance_m == null ? t("breach_detail_unknown") : t("breach_detail", { distance: km(o.distance_m) });
  }
}

function renderOthers(top) {
  const list = $("others");
  list.replaceChildren();
  for (const o of state.orders) {
    if (o === top) continue;
    const li = document.createElement("li");
    li.textContent = `${t("order")} ${o.order_id}: ${t(`tier_${o.tier}_title`)}`;
    list.append(li);
  }
  show(list, list.children.length > 0);
}

function renderConnection() {
  const el = $("conn");
  const s = state.connection;
  el.dataset.state = s;
  if (s === "live") el.textContent = t("conn_live");
  else if (s === "denied") el.textContent = t("conn_denied");
  else if (state.lastMessage)
    el.textContent = t("conn_stale", { time: clock(new Date(state.lastMessage).toISOString()) });
  else el.textContent = t("conn_connecting");
}

// -- tier changes: a quiet notification and vibration, never a position ------------------

async function announce(from, to) {
  if (from === null || from === to) return;
  const patterns = { breach: [600, 200, 600, 200, 600], reveal: [300, 150, 300], notify: [200] };
  if (navigator.vibrate && patterns[to]) navigator.vibrate(patterns[to]);
  // with Web Push the server's notice reaches the lock screen: one notification, not two
  if (state.push || Notification.permission !== "granted" || !state.registration) return;
  await state.registration.showNotification(t("notification_title"), {
    body: t(`notification_${to}`),
    tag: "bangpae-tier",
    renotify: true,
    silent: to === "clear",
  });
}

// -- who read her position, and why: the audit trail, by role and purpose --------------

function said(prefix, value) {
  const key = `${prefix}_${value}`;
  const text = t(key);
  return text === key ? value : text; // a purpose staff wrote in their own words
}

async function loadAccesses() {
  const list = $("access-list");
  try {
    const rows = await api("/victim/accesses");
    list.replaceChildren(
      ...rows.map((a) => {
        const li = document.createElement("li");
        const when = new Date(a.at);
        li.textContent = `${when.toLocaleDateString()} ${clock(a.at)} · ${said("role", a.role)} · ${said("purpose", a.purpose)}`;
        return li;
      }),
    );
    show($("access-none"), rows.length === 0);
  } catch {
    show($("access-none"), false);
  }
}

// -- notices from the control centre: a banner while the app is open -------------------

function showNotice(msg) {
  const box = $("notice");
  box.dataset.kind = msg.kind;
  box.dataset.priority = msg.priority;
  box.setAttribute("role", msg.priority === "normal" ? "status" : "alert");
  $("notice-text").textContent = msg.text[document.documentElement.lang] || msg.text.ko;
  $("notice-time").textContent = clock(new Date(msg.at * 1000).toISOString());
  show(box, true);
}

// Web Push: subscribe this browser with the server's key; the notices then reach her
// with the app closed. Some browsers have no push service: she is told alerts come
// only while the app is open.
function b64urlBytes(text) {
  const b = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4));
  return Uint8Array.from(b, (c) => c.charCodeAt(0));
}

async function enablePush() {
  if (!state.registration || !("PushManager" in window) || Notification.permission !== "granted") {
    return false;
  }
  try {
    const { public_key: key } = await api("/push/key");
    const sub =
      (await state.registration.pushManager.getSubscription()) ||
      (await state.registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: b64urlBytes(key),
      }));
    await api("/push/subscriptions", {
      method: "POST",
      body: { ...sub.toJSON(), lang: document.documentElement.lang === "en" ? "en" : "ko" },
    });
    state.push = sub;
    return true;
  } catch {
    state.push = null;
    return false;
  }
}

async function disablePush() {
  const sub = state.push;
  state.push = null;
  if (!sub) return;
  try {
    await api(`/push/subscriptions?endpoint=${encodeURIComponent(sub.endpoint)}`, { method: "DELETE" });
    await sub.unsubscribe();
  } catch {
    // signed out either way; the push service forgets a dead subscription on its own
  }
}

function onStatus(msg) {
  if (msg.type === "notice") {
    showNotice(msg);
    return;
  }
  if (msg.type === "report_interval") {
    state.interval = msg.seconds;
    document.body.dataset.interval = String(msg.seconds);
    shareNow();
    return;
  }
  if (msg.type !== "status") return;
  state.orders = msg.orders;
  state.receivedAt = Date.now();
  const top = worst(msg.orders);
  const tier = top ? top.tier : "clear";
  const before = state.tier;
  state.tier = tier;
  render();
  announce(before, tier);
}

function startStream() {
  if (state.stream) state.stream.close();
  state.stream = liveStream("/victim/stream", {
    onMessage: (m) => {
      state.lastMessage = Date.now();
      onStatus(m);
    },
    onState: (s) => {
      state.connection = s;
      renderConnection();
      if (s === "denied") signOut("session_expired");
    },
  });
}

// -- her own location: with consent, faster while he is near, gentler on a low battery ----

async function batteryLow() {
  try {
    const b = navigator.getBattery ? await navigator.getBattery() : null;
    return Boolean(b && b.level < 0.2 && !b.charging);
  } catch {
    return false;
  }
}

async function shareNow(force = false) {
  if (!state.me || !$("share").checked) return;
  let every = state.interval;
  if (every >= 60 && (await batteryLow())) every = 120;
  if (!force && Date.now() - state.lastSent < every * 1000) return;
  state.lastSent = Date.now();
  try {
    await api("/victim/location", {
      method: "POST",
      body: {
        lat: state.me.lat,
        lon: state.me.lon,
        accuracy_m: state.me.accuracy_m,
        fix_time: new Date(state.me.at).toISOString(),
      },
    });
    $("share-state").textContent = t("share_sent", { time: clock(new Date().toISOString()) });
    state.sent += 1;
    state.lastFixSent = state.me.at;
    // Her first report starts her track; a second a few seconds later confirms it, so
    // that his position can be shown at once if he is near (docs/disclosure.md).
    if (state.sent === 1) setTimeout(confirmTrack, CONFIRM_AFTER_MS);
  } catch (e) {
    state.lastSent = 0;
    $("share-state").textContent = t("share_failed");
    if (e instanceof ApiError && e.status === 401) signOut("session_expired");
  }
}

const CONFIRM_AFTER_MS = 6000;

// A few seconds after her first report, the next reading of her phone is sent too.
function confirmTrack() {
  if (!$("share").checked) return;
  if (state.me && state.me.at > state.lastFixSent) shareNow(true);
  else state.confirmPending = true;
}

function takePosition(p) {
  state.me = {
    lat: p.coords.latitude,
    lon: p.coords.longitude,
    accuracy_m: p.coords.accuracy,
    at: p.timestamp,
  };
  if (state.confirmPending && state.me.at > state.lastFixSent) {
    state.confirmPending = false;
    shareNow(true);
  } else {
    shareNow(state.lastSent === 0);
  }
  render();
}

function startSharing() {
  if (!navigator.geolocation) {
    $("share-state").textContent = t("share_unavailable");
    return;
  }
  const denied = () => ($("share-state").textContent = t("share_denied"));
  state.watch = navigator.geolocation.watchPosition(takePosition, denied, {
    enableHighAccuracy: true,
    maximumAge: 5000,
    timeout: 30000,
  });
  // A phone lying still may report nothing new for minutes; ask for a fresh reading
  // whenever a report is due, so her position never goes stale while she shares it.
  state.refresh = setInterval(() => {
    if (Date.now() - state.lastSent >= state.interval * 1000) {
      navigator.geolocation.getCurrentPosition(takePosition, denied, {
        enableHighAccuracy: true,
        maximumAge: 0,
        timeout: 30000,
      });
    }
  }, 5000);
  $("share-state").textContent = t("share_on");
}

function stopSharing() {
  if (state.watch !== null) navigator.geolocation.clearWatch(state.watch);
  clearInterval(state.refresh);
  state.watch = null;
  state.lastSent = 0;
  state.sent = 0;
  state.confirmPending = false;
  $("share-state").textContent = t("share_off");
}

// -- SOS: press and hold; queued and retried while offline -------------------------------

function queuedSos() {
  return JSON.parse(localStorage.getItem(SOS_QUEUE) || "[]");
}

async function flushSos() {
  const queue = queuedSos();
  while (queue.length) {
    try {
      await api("/victim/sos", { method: "POST", body: queue[0] });
    } catch (e) {
      if (e instanceof ApiError && e.status < 500 && e.status !== 401) queue.shift();
      else break;
      continue;
    }
    const sent = queue.shift();
    localStorage.setItem(SOS_QUEUE, JSON.stringify(queue));
    $("sos-state").textContent = t(sent.silent ? "sos_sent_silent" : "sos_sent");
    document.body.dataset.sos = "sent";
  }
  localStorage.setItem(SOS_QUEUE, JSON.stringify(queue));
  if (queue.length) {
    $("sos-state").textContent = t("sos_queued");
    document.body.dataset.sos = "queued";
  }
}

function sendSos(silent) {
  const body = { silent };
  if (state.me) Object.assign(body, { lat: state.me.lat, lon: state.me.lon, accuracy_m: state.me.accuracy_m });
  localStorage.setItem(SOS_QUEUE, JSON.stringify([...queuedSos(), body]));
  if (!silent && navigator.vibrate) navigator.vibrate(200);
  $("sos-state").textContent = t("sos_sending");
  flushSos();
}

function holdButton(button, onDone) {
  let timer = null;
  const start = (e) => {
    if (e.type === "keydown" && (e.repeat || (e.key !== " " && e.key !== "Enter"))) return;
    e.preventDefault();
    button.classList.add("holding");
    timer = setTimeout(() => {
      timer = null;
      button.classList.remove("holding");
      onDone();
    }, HOLD_MS);
  };
  const cancel = () => {
    if (timer) clearTimeout(timer);
    timer = null;
    button.classList.remove("holding");
  };
  button.addEventListener("pointerdown", start);
  button.addEventListener("keydown", start);
  for (const ev of ["pointerup", "pointerleave", "pointercancel", "keyup", "blur"]) {
    button.addEventListener(ev, cancel);
  }
  button.addEventListener("contextmenu", (e) => e.preventDefault());
}

// -- quick exit: a neutral page, nothing left in this tab --------------------------------

function quickExit() {
  if (state.stream) state.stream.close();
  if (state.watch !== null) navigator.geolocation.clearWatch(state.watch);
  session.clear();
  location.replace("/today");
}

function signOut(reason) {
  if (reason === "") disablePush(); // she chose to sign out: this browser stops being told
  if (state.stream) state.stream.close();
  state.stream = null;
  session.clear();
  $("login-error").textContent = reason ? t(reason) : "";
  screen("login");
}

// -- wiring ------------------------------------------------------------------------------

function afterLogin() {
  if (!localStorage.getItem("onboarded")) {
    screen("onboarding");
    return;
  }
  screen("status");
  render();
  startStream();
  flushSos();
  enablePush();
}

async function main() {
  await loadLang(preferredLang());
  state.registration = await registerWorker("/app/sw.js");
  $("lang").addEventListener("click", async () => {
    await loadLang(document.documentElement.lang === "ko" ? "en" : "ko");
    render();
    renderConnection();
  });
  $("exit").addEventListener("click", quickExit);
  let lastEscape = 0;
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape") return;
    if (Date.now() - lastEscape < 800) quickExit();
    lastEscape = Date.now();
  });
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("login-error").textContent = "";
    try {
      await login($("username").value, $("password").value, "victim");
      $("password").value = "";
      afterLogin();
    } catch (err) {
      $("login-error").textContent = t(err.status === 429 ? "login_throttled" : "login_failed");
    }
  });
  $("onboarding-done").addEventListener("click", () => {
    localStorage.setItem("onboarded", "1");
    afterLogin();
  });
  for (const link of document.querySelectorAll("[data-go]")) {
    link.addEventListener("click", (e) => {
      e.preventDefault();
      screen(link.dataset.go);
    });
  }
  $("share").addEventListener("change", (e) => (e.target.checked ? startSharing() : stopSharing()));
  $("notify-on").addEventListener("click", async () => {
    const p = await Notification.requestPermission();
    if (p !== "granted") {
      $("notify-state").textContent = t("notify_denied");
      return;
    }
    $("notify-state").textContent = t((await enablePush()) ? "notify_push" : "notify_push_unavailable");
  });
  $("logout").addEventListener("click", () => signOut(""));
  $("notice-dismiss").addEventListener("click", () => show($("notice"), false));
  holdButton($("sos"), () => sendSos($("silent").checked));
  holdButton($("sos-breach"), () => sendSos(false));
  $("breach-map").addEventListener("click", () => {
    state.breachMinimised = true;
    render();
  });
  window.addEventListener("online", flushSos);
  setInterval(flushSos, 5000);
  setInterval(() => {
    renderConnection();
    if (state.orders.some((o) => o.offender)) renderFacts(worst(state.orders));
  }, 1000);
  document.body.dataset.ready = "1";
  if (session.token && session.role === "victim") afterLogin();
  else screen("login");
}

main();
