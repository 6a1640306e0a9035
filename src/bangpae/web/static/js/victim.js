// The protected person's app: status per order, her own location, SOS, quick exit.
// What each screen may say, and when, is in docs/victim-app.md.
import {
  api,
  ApiError,
  bearingDeg,
  clock,
  compass,
  distanceM,
  hm,
  km,
  liveStream,
  loadLang,
  login,
  preferredLang,
  refreshSession,
  registerWorker,
  session,
  show,
  t,
} from "./common.js";
import {
  clearEvidence,
  evidenceConsent,
  flushEvidence,
  MAX_SECONDS,
  queueEvidence,
  setEvidenceConsent,
  startRecording,
  supportedType,
} from "./evidence.js";
import { MapView } from "./map.js";
import { awayText, loadRefuges, renderRefuges } from "./refuges.js";

const $ = (id) => document.getElementById(id);
const SEVERITY = { clear: 0, notify: 1, reveal: 2, breach: 3, uncertain: 4 };
const HOLD_MS = 2000; // SOS needs a press this long, so a pocket cannot send one
const COUNTDOWN_S = 3; // then a count she can cancel, so a mistaken hold sends nothing
// The server sends a status or a heartbeat at least every 20 s: silence for longer than
// this means the screen no longer knows, and must not say "safe" (docs/victim-app.md).
const FRESH_MS = 45000;
const FIX_FRESH_S = 60; // his heading and speed are shown only from a fix younger than this
const QUIET_NOTE_MS = 5000; // a silent SOS's note disappears after this long
const LOCK_AFTER_MS = 5 * 60000; // hidden for longer than this: the app PIN is asked again
const PIN = /^[0-9]{4,8}$/;
// What this device keeps between visits; a quick exit forgets all of it.
const KEEP = { onboarded: "onboarded", share: "share", sosQueue: "sosQueue" };
const SCREENS = ["login", "lock", "onboarding", "status", "help", "accesses", "practice", "settings"];
const ONBOARDING = ["tiers", "sos", "exit", "share", "alerts", "evidence"];
// Her places of refuge are asked again when she has moved this far, when her tier changes,
// or when his shown position has moved this far (docs/refuges.md).
const REFUGE_MOVE_M = 100;
const EVIDENCE_DB = "bangpae-evidence"; // evidence.js's queue (docs/evidence.md)
// A notice of a tier change names the tier it announced (domain/notices.py kinds).
const TIER_NOTICE = {
  tier_notify: "notify",
  tier_reveal: "reveal",
  tier_breach: "breach",
  tier_clear: "clear",
  offender_signal_lost: "uncertain",
};
const GEO_ERRORS = { 1: "share_denied", 2: "share_position_unavailable", 3: "share_timeout" };
const PRACTICE_STEPS = [
  ["received", 0],
  ["seen", 2000],
  ["officer_assigned", 4000],
  ["police_informed", 6000],
  ["closed", 8000],
];

const state = {
  orders: [],
  tier: null,
  freshness: "unknown", // live | stale | unknown
  statusAt: null, // when the last status arrived (ms)
  heardAt: null, // when anything last arrived on the stream (ms)
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
  connection: "connecting",
  receivedAt: Date.now(),
  breachMinimised: false,
  push: null, // this browser's push subscription, when the server can reach it
  notice: null,
  screen: null,
  back: "status", // where the practice screen returns to
  onb: 0,
  sos: null, // the SOS shown: {id, at, silent, steps, eta_min, cancelled, local, cancelAt}
  flushing: false,
  counting: false,
  practice: [],
  practiceTimers: [],
  pins: { app_pin_set: false },
  locked: false,
  hiddenAt: null,
  quietTimer: null,
  exiting: false,
  refuges: null, // her last list: {data, me, key, him} (docs/refuges.md)
  refugesLoading: false,
  recordings: new Map(), // recordings of SOSes not yet sent, by the queue entry's ref
  evidenceFlushing: false,
  evidenceLoud: false, // the last recording's SOS was not silent: its state may be shown
  phoneError: null, // the server's words for a refused number, while shown
};

// -- screens ---------------------------------------------------------------------------

// Every change of screen starts at the top, with the keyboard and screen reader on its heading.
function screen(name) {
  if (state.screen && state.screen !== name && name === "practice") state.back = state.screen;
  state.screen = name;
  for (const id of SCREENS) show($(id), id === name);
  if (name === "accesses") loadAccesses();
  if (name === "settings") openSettings();
  if (name === "status" && state.map) setTimeout(() => state.map.resize(), 0);
  window.scrollTo(0, 0);
  focusHeading(name);
  renderBar();
}

function focusHeading(name) {
  let heading = $(name).querySelector("h1");
  if (name === "status") heading = $("tier-title");
  if (name === "onboarding") heading = $("onboarding").querySelector(".step:not([hidden]) h1");
  if (heading) {
    if (!heading.hasAttribute("tabindex")) heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
  }
}

function worst(orders) {
  return orders.reduce(
    (a, o) => (a === null || SEVERITY[o.tier] > SEVERITY[a.tier] ? o : a),
    null,
  );
}

// live: a status or heartbeat came within FRESH_MS on an open link; stale: the screen had
// data and lost the link; unknown: nothing yet (or a page reloaded without a connection).
function freshness() {
  if (state.statusAt === null) return "unknown";
  if (state.connection === "live" && Date.now() - state.heardAt < FRESH_MS) return "live";
  return "stale";
}

function render() {
  const f = freshness();
  state.freshness = f;
  document.body.dataset.freshness = f;
  const o = f === "unknown" ? null : worst(state.orders);
  const tier = f === "unknown" ? "none" : o ? o.tier : "clear";
  document.body.dataset.tier = tier;
  const card = $("tier-card");
  if (f === "unknown") {
    card.className = "card tier-unknown";
    $("tier-title").textContent = t("fresh_unknown_title");
    $("tier-detail").textContent = t("fresh_unknown_detail");
    $("advice").textContent = t("fresh_unknown_advice");
  } else if (f === "stale") {
    // what she last received, said as the past: never a colour, never "go about your day"
    card.className = "card tier-stale";
    $("tier-title").textContent = t("fresh_stale_title", { time: hm(new Date(state.statusAt)) });
    $("tier-detail").textContent = t("fresh_stale_detail", { tier: t(`tier_${tier}_title`) });
    $("advice").textContent = t("fresh_stale_advice");
  } else {
    card.className = `card tier-${tier}`;
    $("tier-title").textContent = t(`tier_${tier}_title`);
    $("tier-detail").textContent = detail(o);
    $("advice").textContent = o ? advice(o) : t("tier_clear_advice");
  }
  renderFacts(o);
  renderMap(o);
  renderBreach(o);
  renderOthers(o);
  renderBar();
  renderNotice();
  renderTierTexts();
  renderRefugeList();
  updateRefuges();
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

// While his position is shown, the direction away is the server's: away from him and out
// of his predicted path (docs/refuges.md), not simply the bearing opposite him.
function advice(o) {
  if ((o.tier === "reveal" || o.tier === "breach") && o.offender) {
    const away = awayText(currentRefuges(), t);
    if (away) return away;
  }
  return t(`tier_${o.tier}_advice`);
}

function ageOf(him) {
  return him.age_s + (Date.now() - state.receivedAt) / 1000;
}

// His heading and speed describe a moving man now: shown only from a fresh fix on live data.
function hisFixIsFresh(o) {
  return state.freshness === "live" && o.tier !== "uncertain" && ageOf(o.offender) <= FIX_FRESH_S;
}

function renderFacts(o) {
  const facts = $("facts");
  const him = o && o.offender;
  show(facts, Boolean(him));
  if (!him) {
    for (const dd of facts.querySelectorAll("dd")) dd.textContent = "";
    return;
  }
  const fresh = hisFixIsFresh(o);
  facts.dataset.lost = fresh ? "0" : "1";
  facts.dataset.live = fresh ? "1" : "0";
  $("fact-distance").textContent = o.distance_m == null ? "—" : km(o.distance_m);
  $("fact-direction").textContent = state.me ? compass(bearingDeg(state.me, him)) : t("unknown_me");
  const live = (text) => (fresh ? text : ""); // hidden with their labels when not fresh
  $("fact-heading").textContent = live(him.heading_deg == null ? "—" : compass(him.heading_deg));
  $("fact-speed").textContent = live(
    him.speed_mps == null ? "—" : `${Math.round(him.speed_mps * 3.6)} km/h`,
  );
  $("fact-accuracy").textContent = him.accuracy_m == null ? "—" : `± ${Math.round(him.accuracy_m)} m`;
  $("fact-age").textContent = fresh ? t("seconds_ago", { s: Math.round(ageOf(him)) }) : "";
  $("fact-last-seen").textContent = hm(him.fix_time);
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
  const fresh = hisFixIsFresh(o);
  const lost = o.tier === "uncertain" || state.freshness !== "live";
  const items = [
    {
      kind: lost ? "lastSeen" : "him",
      lat: him.lat,
      lon: him.lon,
      accuracy_m: him.accuracy_m,
      heading_deg: fresh ? him.heading_deg : null,
      label: lost ? t("map_last_seen", { time: hm(him.fix_time) }) : t("map_him"),
    },
  ];
  if (state.me) {
    items.push({
      kind: "me",
      lat: state.me.lat,
      lon: state.me.lon,
      accuracy_m: state.me.accuracy_m,
      label: t("map_me"),
    });
  }
  state.map.resize();
  state.map.draw(items);
}

function renderBreach(o) {
  // a breach last received stays on screen when the link is lost: doubt counts toward danger
  const inBreach = Boolean(o && o.tier === "breach");
  if (!inBreach) state.breachMinimised = false;
  const on = inBreach && !state.breachMinimised && !state.locked && !state.exiting;
  const was = !$("breach").hidden;
  show($("breach"), on);
  if (!on) return;
  $("breach-detail").textContent =
    o.distance_m == null ? t("breach_detail_unknown") : t("breach_detail", { distance: km(o.distance_m) });
  renderBreachAway(o);
  const stale = state.freshness !== "live";
  show($("breach-stale"), stale);
  $("breach-stale").textContent = stale
    ? t("fresh_stale_title", { time: hm(new Date(state.statusAt)) })
    : "";
  if (!was) $("breach-title").focus({ preventScroll: true });
}

// Other orders by their place among hers, never by the server's internal id.
function renderOthers(top) {
  const list = $("others");
  list.replaceChildren();
  const mine = [...state.orders].sort((a, b) => a.order_id - b.order_id);
  mine.forEach((o, i) => {
    if (!top || o === top) return;
    const li = document.createElement("li");
    li.textContent = `${t("other_order", { n: i + 1 })}: ${t(`tier_${o.tier}_title`)}`;
    list.append(li);
  });
  show(list, list.children.length > 0);
}

// 112 and SOS in view without scrolling whenever he may be near, or the screen cannot tell.
function renderBar() {
  const signedIn = !["login", "lock", null].includes(state.screen) && !state.locked;
  const f = state.freshness;
  const tier = document.body.dataset.tier;
  const breachHidden = $("breach").hidden;
  const near =
    f !== "live" || tier === "reveal" || tier === "uncertain" || tier === "breach";
  const on = signedIn && near && breachHidden && !state.exiting;
  show($("action-bar"), on);
  show($("bar-guide"), on && tier === "breach");
  document.body.classList.toggle("has-bar", on);
}

function radius(m) {
  return m >= 1000 ? `${Number((m / 1000).toFixed(1))}\u00a0km` : `${Math.round(m)}\u00a0m`;
}

// The tiers taught with her own order's radii (the first of her orders); without them, in words.
function renderTierTexts() {
  const o = [...state.orders].sort((a, b) => a.order_id - b.order_id).find((x) => x.radii);
  const r = o && o.radii;
  const vars = r
    ? { notify: radius(r.notify_m), reveal: radius(r.reveal_m), breach: radius(r.breach_m) }
    : null;
  for (const el of document.querySelectorAll("[data-radii]")) {
    el.textContent = vars ? t(el.dataset.radii, vars) : t(`${el.dataset.radii}_plain`);
  }
}

// -- places of refuge near her, while she shares her position (docs/refuges.md) ----------

// What her list depends on besides her position: her tier, and whether he is shown.
function refugeKey(o) {
  return `${o ? o.tier : "clear"}|${o && o.offender ? "shown" : "withheld"}`;
}

// Her list, only if it was asked for the screen's present tier: a list from before a
// change of tier could hold a place that now lies towards him.
function currentRefuges() {
  const r = state.refuges;
  return r && !r.failed && r.key === refugeKey(worst(state.orders)) ? r.data : null;
}

function wantRefuges(o) {
  if (!state.me || !$("share").checked || state.exiting || !session.token || state.locked) return false;
  const r = state.refuges;
  if (!r || r.key !== refugeKey(o)) return true;
  if (r.failed) return Date.now() - r.at > 30000;
  if (distanceM(r.me, state.me) > REFUGE_MOVE_M) return true;
  const him = o && o.offender;
  return Boolean(him && r.him && distanceM(r.him, him) > REFUGE_MOVE_M);
}

async function updateRefuges() {
  const o = worst(state.orders);
  if (state.refugesLoading || !wantRefuges(o)) return;
  state.refugesLoading = true;
  const me = { lat: state.me.lat, lon: state.me.lon };
  const him = o && o.offender ? { lat: o.offender.lat, lon: o.offender.lon } : null;
  const key = refugeKey(o);
  let data = null;
  let failed = false;
  try {
    data = await loadRefuges(api, me);
  } catch {
    failed = true;
  } finally {
    state.refugesLoading = false;
  }
  if (!$("share").checked || state.exiting) return;
  state.refuges = { data, me, him, key, failed, at: Date.now() };
  // the list and the advice follow (the map is left as it is), and it is asked again if
  // the tier moved meanwhile
  renderRefugeList();
  if (state.freshness === "live") {
    const top = worst(state.orders);
    $("advice").textContent = top ? advice(top) : t("tier_clear_advice");
  }
  if (!$("breach").hidden) renderBreachAway(worst(state.orders));
  updateRefuges();
}

function renderBreachAway(o) {
  const away = o && o.offender && state.freshness === "live" ? awayText(currentRefuges(), t) : null;
  show($("breach-away"), Boolean(away));
  $("breach-away").textContent = away || "";
}

function renderRefugeList() {
  const box = $("refuges");
  const r = state.refuges;
  const on = Boolean($("share").checked && state.me && !state.exiting && (r || state.refugesLoading));
  show(box, on);
  if (!on) {
    box.dataset.drawn = "";
    return;
  }
  const data = currentRefuges();
  const status = r && r.failed ? "error" : data ? "ready" : "loading";
  const drawn = `${status}|${document.documentElement.lang}|${r ? r.at : 0}`;
  if (box.dataset.drawn === drawn) return; // unchanged: keep the links (and her focus)
  box.dataset.drawn = drawn;
  box.dataset.state = status;
  box.dataset.for = status === "ready" ? r.key : "";
  const list = $("refuge-list");
  if (status === "ready") {
    renderRefuges(list, data, t);
    return;
  }
  const li = document.createElement("li");
  li.className = "refuge refuge-none";
  li.textContent = t(status === "error" ? "refuges_error" : "refuges_loading");
  list.replaceChildren(li);
}

function renderConnection() {
  const el = $("conn");
  const s = state.connection;
  el.dataset.state = s;
  if (s === "live") el.textContent = t("conn_live");
  else if (s === "denied") el.textContent = t("conn_denied");
  else if (state.heardAt)
    el.textContent = t("conn_stale", { time: clock(new Date(state.heardAt).toISOString()) });
  else el.textContent = t("conn_connecting");
}

// -- tier changes: a quiet notification and vibration, never a position ------------------

async function announce(from, to) {
  if (from === null || from === to) return;
  const patterns = { breach: [600, 200, 600, 200, 600], reveal: [300, 150, 300], notify: [200] };
  if (navigator.vibrate && patterns[to]) navigator.vibrate(patterns[to]);
  // with Web Push the server's notice reaches the lock screen: one notification, not two
  if (state.push || !("Notification" in window) || Notification.permission !== "granted") return;
  if (!state.registration) return;
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

function when(a) {
  const day = new Date(a.first_at || a.at).toLocaleDateString(document.documentElement.lang);
  if (a.count > 1 && a.first_at && a.last_at) {
    return `${day} ${t("accesses_times", { n: a.count })}, ${hm(a.first_at)}–${hm(a.last_at)}`;
  }
  return `${day} ${clock(a.at || a.last_at)}`;
}

async function loadAccesses() {
  const list = $("access-list");
  try {
    const rows = await api("/victim/accesses");
    list.replaceChildren(
      ...rows.map((a) => {
        const li = document.createElement("li");
        li.textContent = `${when(a)} · ${said("role", a.role)} · ${said("purpose", a.purpose)}`;
        return li;
      }),
    );
    show($("access-none"), rows.length === 0);
  } catch {
    show($("access-none"), false);
  }
}

// -- notices from the control centre: a banner while the app is open -------------------
// A tier notice tells the lock screen to open the app; in the open app the live screen
// already says it, so it is shown only while the screen has no live data, and goes with
// the next status. Other notices show the app's own words for their kind.

function onNotice(msg) {
  if (msg.kind in TIER_NOTICE && state.freshness === "live") return;
  state.notice = msg;
  renderNotice();
}

function renderNotice() {
  const box = $("notice");
  const msg = state.notice;
  show(box, Boolean(msg));
  if (!msg) return;
  box.dataset.kind = msg.kind;
  box.dataset.priority = msg.priority;
  box.setAttribute("role", msg.priority === "normal" ? "status" : "alert");
  const time = hm(new Date(msg.at * 1000));
  const key = `notice_in_app_${msg.kind}`;
  const own = t(key, { time });
  const lang = document.documentElement.lang;
  $("notice-text").textContent = own !== key ? own : (msg.text && (msg.text[lang] || msg.text.ko)) || "";
  $("notice-time").textContent = clock(new Date(msg.at * 1000).toISOString());
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

async function askNotifications(out) {
  const p = await Notification.requestPermission();
  let key = "notify_denied";
  if (p === "granted") key = (await enablePush()) ? "notify_push" : "notify_push_unavailable";
  lastSaid.notify[out.id] = key;
  out.textContent = t(key);
}

function onStatus(msg) {
  if (msg.type === "notice") {
    onNotice(msg);
    return;
  }
  if (msg.type === "sos") {
    applySos(msg.sos);
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
  state.statusAt = Date.now();
  if (state.notice && state.notice.kind in TIER_NOTICE) state.notice = null;
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
      state.heardAt = Date.now();
      onStatus(m);
      if (state.freshness !== freshness()) render();
    },
    onState: (s) => {
      state.connection = s;
      renderConnection();
      if (state.freshness !== freshness()) render();
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

// What the sharing and alert lines last said, to say again in another language.
const lastSaid = { share: null, notify: {}, lines: {}, evidence: null };

function shareSay(key, vars) {
  lastSaid.share = [key, vars];
  const text = t(key, vars);
  $("share-state").textContent = text;
  $("onb-share-state").textContent = text;
  document.body.dataset.share = key;
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
    shareSay("share_sent", { time: clock(new Date().toISOString()) });
    state.sent += 1;
    state.lastFixSent = state.me.at;
    // Her first report starts her track; a second a few seconds later confirms it, so
    // that his position can be shown at once if he is near (docs/disclosure.md).
    if (state.sent === 1) setTimeout(confirmTrack, CONFIRM_AFTER_MS);
  } catch (e) {
    state.lastSent = 0;
    shareSay("share_failed");
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
  show($("share-retry"), false);
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

// Each GeolocationPositionError code says something different, and what she can do.
function geoFailed(err) {
  shareSay(GEO_ERRORS[err.code] || "share_position_unavailable");
  show($("share-retry"), true);
}

function startSharing() {
  if (!navigator.geolocation) {
    shareSay("share_unavailable");
    return;
  }
  state.watch = navigator.geolocation.watchPosition(takePosition, geoFailed, {
    enableHighAccuracy: true,
    maximumAge: 5000,
    timeout: 30000,
  });
  // A phone lying still may report nothing new for minutes; ask for a fresh reading
  // whenever a report is due, so her position never goes stale while she shares it.
  state.refresh = setInterval(() => {
    if (Date.now() - state.lastSent >= state.interval * 1000) {
      navigator.geolocation.getCurrentPosition(takePosition, geoFailed, {
        enableHighAccuracy: true,
        maximumAge: 0,
        timeout: 30000,
      });
    }
  }, 5000);
  shareSay("share_on");
}

function stopSharing() {
  if (state.watch !== null) navigator.geolocation.clearWatch(state.watch);
  clearInterval(state.refresh);
  state.watch = null;
  state.lastSent = 0;
  state.sent = 0;
  state.confirmPending = false;
  state.me = null;
  state.refuges = null; // her list was asked with her position: gone with it
  show($("share-retry"), false);
  shareSay("share_off");
}

// Her choice is kept on this device (until a quick exit), and sharing resumes on reload.
function setShare(on) {
  $("share").checked = on;
  localStorage.setItem(KEEP.share, on ? "on" : "off");
  stopSharing();
  if (on) startSharing();
  render();
}

// -- SOS: hold, a count she can cancel, then the loop as the control centre works it ------

function queuedSos() {
  return JSON.parse(localStorage.getItem(KEEP.sosQueue) || "[]");
}

function saveQueue(queue) {
  if (state.exiting) return;
  if (queue.length) localStorage.setItem(KEEP.sosQueue, JSON.stringify(queue));
  else localStorage.removeItem(KEEP.sosQueue);
}

// A silent SOS is confirmed only by a small, plain note that goes away.
function quietNote(key) {
  const el = $("sos-quiet");
  el.textContent = t(key);
  clearTimeout(state.quietTimer);
  state.quietTimer = setTimeout(() => (el.textContent = ""), QUIET_NOTE_MS);
}

async function flushSos() {
  if (state.flushing || state.exiting) return;
  state.flushing = true;
  try {
    const queue = queuedSos();
    while (queue.length) {
      let r;
      try {
        r = await api("/victim/sos", { method: "POST", body: wire(queue[0]) });
      } catch (e) {
        if (e instanceof ApiError && e.status < 500 && ![401, 429].includes(e.status)) {
          queue.shift(); // refused as malformed: retrying would never succeed
          saveQueue(queue);
          continue;
        }
        break;
      }
      const sent = queue.shift();
      saveQueue(queue);
      attachEvidence(sent.ref, r.sos_id);
      document.body.dataset.sos = "sent";
      if (sent.silent) {
        quietNote("sos_sent_silent");
      } else {
        const at = r.at || new Date().toISOString();
        state.sos = {
          id: r.sos_id ?? null,
          at,
          silent: false,
          steps: [{ state: "received", at }],
          eta_min: null,
          cancelled: false,
          local: null,
        };
        renderSos();
        loadSos();
      }
    }
    if (queue.length) {
      const first = document.body.dataset.sos !== "queued";
      document.body.dataset.sos = "queued";
      if (queue.some((b) => !b.silent)) {
        state.sos = { ...(state.sos || {}), id: null, steps: [], local: "queued" };
        renderSos();
      } else if (first) {
        quietNote("sos_queued_quiet");
      }
    }
  } finally {
    state.flushing = false;
  }
}

function sendSos(silent) {
  const body = { silent };
  if (state.me) Object.assign(body, { lat: state.me.lat, lon: state.me.lon, accuracy_m: state.me.accuracy_m });
  const ref = startEvidence(silent);
  if (ref) body.ref = ref;
  saveQueue([...queuedSos(), body]);
  document.body.dataset.sos = "sending";
  if (!silent) {
    if (navigator.vibrate) navigator.vibrate(200);
    state.sos = { id: null, at: null, silent: false, steps: [], local: "sending", cancelled: false };
    renderSos();
  }
  flushSos();
}

// A queued SOS as the server takes it: without the page's own reference to its recording.
function wire(body) {
  const { ref, ...rest } = body;
  return rest;
}

// -- evidence: with her consent, the sound after a real SOS (docs/evidence.md) -----------
// The recording starts when the count runs out, whether or not the SOS can go yet; it is
// queued for upload once the server has named the SOS. A silent SOS records without a
// word on screen.

function evidenceSay(key) {
  lastSaid.evidence = key;
  for (const el of document.querySelectorAll(".evidence-state")) el.textContent = key ? t(key) : "";
}

function startEvidence(silent) {
  if (!evidenceConsent()) return null;
  state.evidenceLoud = !silent;
  evidenceSay(null);
  if (!supportedType() || !navigator.mediaDevices) {
    if (!silent) evidenceSay("evidence_unavailable");
    return null;
  }
  const ref = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  const rec = startRecording({ seconds: MAX_SECONDS });
  rec.then(
    () => state.evidenceLoud && !silent && evidenceSay("evidence_recording"),
    () => state.evidenceLoud && !silent && evidenceSay("evidence_unavailable"),
  );
  state.recordings.set(ref, rec);
  return ref;
}

// The server named the SOS: its recording, once finished, waits in the queue for upload.
async function attachEvidence(ref, sosId) {
  const rec = ref ? state.recordings.get(ref) : null;
  if (!rec) return;
  state.recordings.delete(ref);
  let handle = null;
  try {
    handle = await rec;
    if (sosId == null) {
      handle.discard(); // a server that does not name its SOS cannot take a recording
      return;
    }
    const blob = await handle.blob;
    if (state.exiting) return;
    await queueEvidence(sosId, blob, handle.recordedAt);
  } catch {
    return; // no microphone, or thrown away by a quick exit
  }
  flushEvidenceQueue();
}

// Whether anything may wait in the queue, without creating its database just to look.
async function evidenceWaiting() {
  if (indexedDB.databases) return (await indexedDB.databases()).some((d) => d.name === EVIDENCE_DB);
  return evidenceConsent();
}

async function flushEvidenceQueue() {
  if (state.evidenceFlushing || state.exiting || !session.token) return;
  state.evidenceFlushing = true;
  try {
    if (!(await evidenceWaiting())) return;
    const out = await flushEvidence();
    if (!state.evidenceLoud || state.exiting) return;
    if (out.kept) evidenceSay("evidence_queued");
    else if (out.sent.length) evidenceSay("evidence_sent");
  } catch {
    // the queue stays for the next round
  } finally {
    state.evidenceFlushing = false;
  }
}

// The same rounds as the SOS queue: on reconnecting, every 5 s, and after signing in.
function flushQueues() {
  flushSos();
  flushEvidenceQueue();
}

// Her consent, from the settings or the onboarding. The browser asks for the microphone
// now, once, rather than in the middle of an SOS (a prompt would give a silent SOS away).
async function setConsent(on, out) {
  for (const id of ["evidence-consent", "onb-evidence"]) $(id).checked = on;
  if (!on) {
    setEvidenceConsent(false);
    say(out, "evidence_saved_off");
    return;
  }
  try {
    if (!supportedType() || !navigator.mediaDevices) throw new Error("no recorder");
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
    stream.getTracks().forEach((track) => track.stop());
  } catch {
    for (const id of ["evidence-consent", "onb-evidence"]) $(id).checked = false;
    setEvidenceConsent(false);
    say(out, "evidence_unavailable");
    return;
  }
  setEvidenceConsent(true);
  say(out, "evidence_saved_on");
}

// -- her phone number and her choices of texts (docs/sms.md) ----------------------------

function say(el, key, vars) {
  if (!el) return;
  lastSaid.lines[el.id] = key ? [key, vars] : null;
  el.textContent = key ? t(key, vars) : "";
}

function openSettings() {
  $("evidence-consent").checked = evidenceConsent();
  say($("evidence-state"), null);
  say($("pins-state"), null);
  for (const id of ["pins-current", "app-pin", "duress-pin", "sms-pin"]) $(id).value = "";
  showPinRows();
  loadContact();
}

// Once she has an app PIN, changing her PINs or her texts asks for it (docs/sos.md).
function showPinRows() {
  const has = Boolean(state.pins.app_pin_set);
  show($("pins-current-row"), has);
  show($("sms-pin-row"), has);
  show($("pins-clear"), has);
}

function smsTiers() {
  return [...document.querySelectorAll("input[name='sms-tier']")];
}

function showContact(c) {
  $("sms-phone").value = c.phone || "";
  $("sms-enabled").checked = Boolean(c.sms && c.sms.enabled);
  const tiers = (c.sms && c.sms.tiers) || [];
  for (const box of smsTiers()) box.checked = tiers.includes(box.value);
  $("sms-lang").value = c.lang === "en" ? "en" : "ko";
  $("sms-tiers").disabled = !$("sms-enabled").checked;
}

function phoneError(server) {
  const input = $("sms-phone");
  state.phoneError = server;
  if (server === null) {
    input.removeAttribute("aria-invalid");
    $("sms-phone-error").textContent = "";
    return;
  }
  input.setAttribute("aria-invalid", "true");
  // the server says what to give in English; in Korean, the same in the app's words
  const en = document.documentElement.lang === "en" && server;
  $("sms-phone-error").textContent = en
    ? server.charAt(0).toUpperCase() + server.slice(1)
    : t("sms_phone_invalid");
}

async function loadContact() {
  phoneError(null);
  say($("sms-state"), null);
  try {
    showContact(await api("/victim/contact"));
  } catch {
    say($("sms-state"), "sms_load_failed");
  }
}

// PUT as common.js's api() does, but keeping the problem's field errors.
async function putContact(body, retried = false) {
  const headers = { Accept: "application/json", "Content-Type": "application/json" };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  const r = await fetch("/api/v1/victim/contact", { method: "PUT", headers, body: JSON.stringify(body) });
  if (r.status === 401 && !retried && session.refreshToken && (await refreshSession()) === "ok") {
    return putContact(body, true);
  }
  const data = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
  return { status: r.status, data };
}

async function saveContact(e) {
  e.preventDefault();
  phoneError(null);
  const out = $("sms-state");
  say(out, null);
  const body = {
    phone: $("sms-phone").value.trim() || null,
    sms: {
      enabled: $("sms-enabled").checked,
      tiers: smsTiers().filter((b) => b.checked).map((b) => b.value),
    },
    lang: $("sms-lang").value === "en" ? "en" : "ko",
  };
  if (state.pins.app_pin_set) body.pin = $("sms-pin").value || null;
  let r;
  try {
    r = await putContact(body);
  } catch {
    say(out, "sms_failed");
    return;
  }
  if (r.status === 403 || r.status === 429) {
    say(out, r.status === 429 ? "pins_locked" : "sms_pin_wrong");
    $("sms-pin").focus();
    return;
  }
  $("sms-pin").value = "";
  if (r.status === 200) {
    showContact(r.data);
    say(out, r.data.phone ? "sms_saved_phone" : "sms_saved", { phone: r.data.phone });
    return;
  }
  const errors = (r.data && r.data.errors) || [];
  const phone = errors.find((x) => (x.loc || []).includes("phone"));
  if (r.status === 422 && phone) {
    phoneError(String(phone.msg || "").replace(/^Value error, /, ""));
    $("sms-phone").focus();
    return;
  }
  say(out, "sms_failed");
}

async function loadSos() {
  try {
    const data = await api("/victim/sos");
    applySos(data.sos || []);
  } catch {
    // a server without the SOS loop, or offline: the screen keeps what it knows
  }
}

// The control centre's progress of her newest SOS (a silent one is never shown as a loop).
function applySos(list) {
  const loud = list.filter((s) => !s.silent).sort((a, b) => (a.at < b.at ? 1 : -1));
  const cur = state.sos;
  let pick = null;
  if (cur && cur.id != null) pick = loud.find((s) => s.id === cur.id) || null;
  if (!pick && (!cur || cur.local === null)) {
    pick = loud.find((s) => s.state !== "closed" && !s.cancelled && (!cur || s.at >= cur.at)) || null;
  }
  if (!pick) return;
  const cancelAt = cur && cur.id === pick.id ? cur.cancelAt : undefined;
  state.sos = { ...pick, local: null, cancelAt };
  renderSos();
}

function stepText(step, eta) {
  if (step === "officer_assigned" && eta != null) return t("sos_step_officer_assigned_eta", { eta });
  return t(`sos_step_${step}`);
}

function loopItems(ol, steps, eta) {
  ol.replaceChildren(
    ...steps.map((s) => {
      const li = document.createElement("li");
      li.dataset.state = s.state;
      li.append(stepText(s.state, eta));
      if (s.at) {
        const time = document.createElement("time");
        time.dateTime = s.at;
        time.textContent = clock(s.at);
        li.append(" ", time);
      }
      return li;
    }),
  );
}

function renderSos() {
  const cur = state.sos;
  let steps = [];
  if (cur) {
    if (cur.local === "queued" || cur.local === "sending") steps = [{ state: cur.local, at: null }];
    else steps = [...(cur.steps || [])].sort((a, b) => (a.at < b.at ? -1 : 1));
    // her cancel, as she sent it, or as the server knows it (after a reload)
    if (cur.cancelAt || cur.cancelled) {
      steps = [...steps, { state: "cancel_requested", at: cur.cancelAt || null }];
    }
  }
  const last = steps.length ? steps[steps.length - 1].state : "";
  document.body.dataset.sosStep = last;
  const canCancel =
    cur && cur.id != null && !cur.cancelled && !cur.cancelAt && cur.state !== "closed" && !cur.local;
  for (const panel of document.querySelectorAll("[data-sos-panel]")) {
    const said = panel.querySelector(".sos-state");
    const loop = panel.querySelector(".sos-loop");
    if (!cur) {
      said.textContent = "";
      show(loop, false);
      continue;
    }
    said.textContent = t(
      cur.local === "queued" ? "sos_queued" : cur.local === "sending" ? "sos_sending" : "sos_sent",
    );
    show(loop, steps.length > 0);
    loopItems(loop.querySelector("ol"), steps, cur.eta_min);
    show(loop.querySelector(".sos-safe"), Boolean(canCancel));
  }
}

// "I am safe": the operator still verifies. With an app PIN set, a PIN is asked (the server
// never says whether a duress PIN is set); whatever the PIN, the screen says the same, for
// the duress PIN raises the alarm on the server.
async function cancelSos() {
  const cur = state.sos;
  if (!cur || cur.id == null) return;
  let pin = null;
  if (state.pins.app_pin_set) {
    pin = await askPin();
    if (pin === null) return;
  }
  try {
    await api(`/victim/sos/${cur.id}/cancel`, { method: "POST", body: { pin } });
  } catch (e) {
    if (!(e instanceof ApiError)) {
      for (const el of document.querySelectorAll("[data-sos-panel] .sos-state")) {
        el.textContent = t("sos_cancel_failed");
      }
      return;
    }
  }
  // the stream may have brought a fresher copy of this SOS meanwhile: mark the one shown
  const shown = state.sos && state.sos.id === cur.id ? state.sos : cur;
  shown.cancelAt = new Date().toISOString();
  renderSos();
}

function askPin() {
  return new Promise((resolve) => {
    const box = $("pin-ask");
    const input = $("pin-ask-input");
    const before = document.activeElement;
    input.value = "";
    show(box, true);
    input.focus();
    const done = (value) => {
      show(box, false);
      $("pin-ask-form").removeEventListener("submit", submit);
      $("pin-ask-cancel").removeEventListener("click", cancel);
      if (before) before.focus({ preventScroll: true });
      resolve(value);
    };
    const submit = (e) => {
      e.preventDefault();
      if (PIN.test(input.value)) done(input.value);
    };
    const cancel = () => done(null);
    $("pin-ask-form").addEventListener("submit", submit);
    $("pin-ask-cancel").addEventListener("click", cancel);
  });
}

// The count after a hold: resolves true when it ran out, false when cancelled.
function countdown({ quiet = false, practice = false } = {}) {
  return new Promise((resolve) => {
    const box = $("countdown");
    const before = document.activeElement;
    let n = COUNTDOWN_S;
    state.counting = true;
    document.body.dataset.sos = practice ? document.body.dataset.sos || "" : "counting";
    box.classList.toggle("quiet", quiet);
    box.classList.toggle("practice", practice);
    $("countdown-title").textContent = t(practice ? "practice_label" : "countdown_title");
    const draw = () => {
      $("countdown-n").textContent = String(n);
      const key = practice ? "countdown_practice" : quiet ? "countdown_quiet" : "countdown_text";
      $("countdown-text").textContent = t(key, { n });
    };
    draw();
    show(box, true);
    $("countdown-cancel").focus();
    const done = (go) => {
      clearInterval(tick);
      $("countdown-cancel").removeEventListener("click", cancel);
      show(box, false);
      state.counting = false;
      if (before && before.focus) before.focus({ preventScroll: true });
      resolve(go);
    };
    const tick = setInterval(() => {
      n -= 1;
      if (n <= 0) done(true);
      else draw();
    }, 1000);
    const cancel = () => {
      if (!practice) document.body.dataset.sos = "cancelled";
      done(false);
    };
    $("countdown-cancel").addEventListener("click", cancel);
  });
}

async function startSos(silent) {
  if (state.counting) return;
  if (await countdown({ quiet: silent })) sendSos(silent);
  else quietNote("sos_cancelled_before");
}

// -- practice: the same hold and count, a simulated loop, nothing sent -----------------

async function startPractice() {
  if (state.counting) return;
  if (!(await countdown({ practice: true }))) return;
  for (const timer of state.practiceTimers) clearTimeout(timer);
  state.practice = [];
  state.practiceTimers = PRACTICE_STEPS.map(([step, after]) =>
    setTimeout(() => {
      state.practice.push({ state: step, at: new Date().toISOString() });
      renderPractice();
    }, after),
  );
}

function renderPractice() {
  show($("practice-loop"), state.practice.length > 0);
  loopItems($("practice-loop").querySelector("ol"), state.practice, 7);
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

// -- PINs: a lock on reopening, and a duress PIN that looks like the real one ----------

async function loadPins() {
  try {
    state.pins = await api("/victim/pins");
  } catch {
    state.pins = { app_pin_set: false };
  }
}

function lock() {
  state.locked = true;
  $("lock-pin").value = "";
  $("lock-error").textContent = "";
  screen("lock");
  render();
}

async function unlock(e) {
  e.preventDefault();
  const pin = $("lock-pin").value;
  $("lock-error").textContent = "";
  let ok = false;
  if (PIN.test(pin)) {
    try {
      ok = (await api("/victim/pin/check", { method: "POST", body: { pin } })).ok === true;
    } catch (err) {
      if (!(err instanceof ApiError)) {
        $("lock-error").textContent = t("lock_offline"); // not "wrong": she would doubt her PIN
        return;
      }
    }
  }
  if (!ok) {
    $("lock-error").textContent = t("lock_wrong");
    return;
  }
  state.locked = false;
  $("lock-pin").value = "";
  if (localStorage.getItem(KEEP.onboarded)) screen("status");
  else onboarding(0);
  render();
}

// A field left empty keeps that PIN; "clear" removes both. The server is given her current
// app PIN once she has one; her duress PIN there looks the same (docs/sos.md).
async function savePins(e, clear = false) {
  e.preventDefault();
  const app = $("app-pin").value;
  const duress = $("duress-pin").value;
  const has = Boolean(state.pins.app_pin_set);
  const out = $("pins-state");
  let body;
  if (clear) {
    body = { app_pin: null, duress_pin: null };
  } else {
    if ((!app && !duress) || (app && !PIN.test(app)) || (duress && !PIN.test(duress)) || (app && app === duress)) {
      say(out, "pins_invalid");
      return;
    }
    if (!has && !app) {
      say(out, "pins_need_app");
      return;
    }
    body = {};
    if (app) body.app_pin = app;
    if (duress) body.duress_pin = duress;
  }
  if (has) body.current_pin = $("pins-current").value || null;
  try {
    await api("/victim/pins", { method: "PUT", body });
  } catch (err) {
    const why = { 403: "pins_wrong_current", 422: "pins_other", 429: "pins_locked" };
    say(out, (err instanceof ApiError && why[err.status]) || "pins_failed");
    if (err instanceof ApiError && err.status === 403) $("pins-current").focus();
    return;
  }
  for (const id of ["pins-current", "app-pin", "duress-pin"]) $(id).value = "";
  say(out, clear ? "pins_cleared" : "pins_saved");
  await loadPins();
  showPinRows();
}

// -- onboarding: the tiers with her radii, SOS, quick exit, and the two asks -------------

function onboarding(step) {
  state.onb = Math.max(0, Math.min(step, ONBOARDING.length - 1));
  const steps = $("onboarding").querySelectorAll(".step");
  steps.forEach((el, i) => show(el, i === state.onb));
  const last = state.onb === ONBOARDING.length - 1;
  show($("onb-back"), state.onb > 0);
  show($("onb-next"), !last);
  show($("onboarding-done"), last);
  $("onb-count").textContent = t("onb_step", { n: state.onb + 1, total: ONBOARDING.length });
  document.body.dataset.onboarding = ONBOARDING[state.onb];
  $("onb-evidence").checked = evidenceConsent();
  screen("onboarding");
}

// -- quick exit: a neutral page, nothing of the app left on this device ------------------

async function quickExit() {
  if (state.exiting) return;
  state.exiting = true;
  document.body.classList.add("leaving");
  const queue = queuedSos();
  const token = session.token;
  // an SOS not yet sent goes first, on a request that outlives the page
  const sends =
    token === null
      ? []
      : queue.map((body) =>
          fetch("/api/v1/victim/sos", {
            method: "POST",
            headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
            body: JSON.stringify(wire(body)),
            keepalive: true,
          }).catch(() => null),
        );
  if (state.stream) state.stream.close();
  if (state.watch !== null) navigator.geolocation.clearWatch(state.watch);
  localStorage.clear();
  // a recording in progress stops and is thrown away with the queue (docs/evidence.md)
  const wiped = clearEvidence().catch(() => null);
  await Promise.race([Promise.all([wiped, ...sends]), new Promise((r) => setTimeout(r, 1000))]);
  session.clear();
  location.replace("/today");
}

function signOut(reason) {
  if (reason === "") disablePush(); // she chose to sign out: this browser stops being told
  if (state.stream) state.stream.close();
  state.stream = null;
  session.clear();
  state.locked = false;
  $("login-error").textContent = reason ? t(reason) : "";
  screen("login");
}

// -- wiring ------------------------------------------------------------------------------

// After signing in (fresh) or on a reload with a session: a reload asks the app PIN first.
async function afterLogin(fresh) {
  startStream();
  flushQueues();
  enablePush();
  await loadPins();
  if (!fresh && state.pins.app_pin_set) lock();
  else if (!localStorage.getItem(KEEP.onboarded)) onboarding(0);
  else screen("status");
  if (localStorage.getItem(KEEP.share) === "on" && state.watch === null) {
    $("share").checked = true;
    startSharing();
  }
  loadSos();
  render();
}

async function switchLang() {
  await loadLang(document.documentElement.lang === "ko" ? "en" : "ko");
  render();
  renderConnection();
  renderSos();
  renderPractice();
  if (state.screen === "onboarding") {
    $("onb-count").textContent = t("onb_step", { n: state.onb + 1, total: ONBOARDING.length });
  }
  if (state.screen === "accesses") loadAccesses();
  if (lastSaid.share) shareSay(...lastSaid.share);
  for (const [id, key] of Object.entries(lastSaid.notify)) $(id).textContent = t(key);
  for (const [id, line] of Object.entries(lastSaid.lines)) $(id).textContent = line ? t(...line) : "";
  if (lastSaid.evidence) evidenceSay(lastSaid.evidence);
  if (state.phoneError != null) phoneError(state.phoneError);
}

// Overlays start below the header, so quick exit stays within reach on every screen.
function trackHeader() {
  const bar = document.querySelector("header.bar");
  const set = () => document.documentElement.style.setProperty("--bar-h", `${bar.offsetHeight}px`);
  set();
  if ("ResizeObserver" in window) new ResizeObserver(set).observe(bar);
}

async function main() {
  trackHeader();
  await loadLang(preferredLang());
  state.registration = await registerWorker("/app/sw.js");
  $("lang").addEventListener("click", switchLang);
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
      afterLogin(true);
    } catch (err) {
      $("login-error").textContent = t(err.status === 429 ? "login_throttled" : "login_failed");
    }
  });
  $("lock-form").addEventListener("submit", unlock);
  $("pins-form").addEventListener("submit", savePins);
  $("pins-clear").addEventListener("click", (e) => savePins(e, true));
  $("sms-form").addEventListener("submit", saveContact);
  $("sms-enabled").addEventListener("change", (e) => ($("sms-tiers").disabled = !e.target.checked));
  $("evidence-consent").addEventListener("change", (e) => setConsent(e.target.checked, $("evidence-state")));
  $("onb-evidence").addEventListener("change", (e) => setConsent(e.target.checked, $("onb-evidence-state")));
  $("onb-next").addEventListener("click", () => onboarding(state.onb + 1));
  $("onb-back").addEventListener("click", () => onboarding(state.onb - 1));
  $("onb-share").addEventListener("click", () => setShare(true));
  $("onb-notify").addEventListener("click", () => askNotifications($("onb-notify-state")));
  $("onboarding-done").addEventListener("click", () => {
    localStorage.setItem(KEEP.onboarded, "1");
    if (!localStorage.getItem(KEEP.share)) localStorage.setItem(KEEP.share, "off");
    screen("status");
    render();
  });
  for (const link of document.querySelectorAll("[data-go]")) {
    link.addEventListener("click", (e) => {
      e.preventDefault();
      screen(link.dataset.go);
    });
  }
  $("practice-back").addEventListener("click", () => {
    if (state.back === "onboarding") onboarding(state.onb);
    else screen(state.back || "status");
  });
  $("share").addEventListener("change", (e) => setShare(e.target.checked));
  $("share-retry").addEventListener("click", () => setShare(true));
  $("notify-on").addEventListener("click", () => askNotifications($("notify-state")));
  $("logout").addEventListener("click", () => signOut(""));
  $("notice-dismiss").addEventListener("click", () => {
    state.notice = null;
    renderNotice();
  });
  holdButton($("sos"), () => startSos($("silent").checked));
  holdButton($("bar-sos"), () => startSos($("silent").checked));
  holdButton($("sos-breach"), () => startSos(false));
  holdButton($("practice-sos"), startPractice);
  for (const button of document.querySelectorAll(".sos-safe")) button.addEventListener("click", cancelSos);
  $("breach-map").addEventListener("click", () => {
    state.breachMinimised = true;
    render();
    focusHeading("status");
  });
  $("bar-guide").addEventListener("click", () => {
    state.breachMinimised = false;
    render();
    $("breach-title").focus({ preventScroll: true });
  });
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      state.hiddenAt = Date.now();
      return;
    }
    const away = state.hiddenAt !== null && Date.now() - state.hiddenAt > LOCK_AFTER_MS;
    state.hiddenAt = null;
    if (away && state.pins.app_pin_set && session.token && !state.locked) lock();
  });
  window.addEventListener("online", flushQueues);
  setInterval(flushQueues, 5000);
  setInterval(() => {
    renderConnection();
    if (state.freshness !== freshness()) render(); // the link went quiet: no longer live
    else if (state.orders.some((o) => o.offender)) renderFacts(worst(state.orders));
  }, 1000);
  render();
  document.body.dataset.ready = "1";
  if (session.token && session.role === "victim") afterLogin(false);
  else screen("login");
}

main();
