// The field officer's app: dispatches assigned to me, whom to go to and where, arrival and
// outcome. What it shows, and why: docs/field-app.md.
import {
  api,
  ApiError,
  bearingDeg,
  clock,
  compass,
  distanceM,
  km,
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
const POLL_MS = 5000;
const STALE_MS = 15000; // the list is called stale when not refreshed for this long
const OLD_TARGET_S = 120; // a target position older than this is said to be old, prominently
const REPORT_MS = 30000; // own position while on duty
const WHOM = ["requester", "victim", "offender"]; // whom a dispatch sends the officer to
const NAVER_APP = "bangpae.field"; // Naver Map wants a caller name; this one names no server
const SEEN_KEY = "seen_dispatches"; // this tab only: signing out clears it with the session

const state = {
  list: [],
  selected: null,
  me: null,
  watch: null,
  lastOk: null, // Date.now() of the last list received
  lastSent: 0,
  map: null,
  seen: new Set(JSON.parse(sessionStorage.getItem(SEEN_KEY) || "[]")),
  unread: new Set(), // new dispatches not opened yet: highlighted in the list
};

function screen(name) {
  show($("login"), name === "login");
  show($("duty"), name === "duty");
}

function kindText(d) {
  return `${t(`kind_${d.kind}`)} · ${t(`priority_${d.priority}`)}`;
}

const whomOf = (target) => (target && WHOM.includes(target.whom) ? target.whom : null);

// A position is usable only with finite coordinates (hrefs and pins are built from them).
const placed = (p) => Boolean(p) && Number.isFinite(p.lat) && Number.isFinite(p.lon);

// How old a position is now: its age when the list came, plus the time since.
function ageNow(p) {
  const since = state.lastOk ? (Date.now() - state.lastOk) / 1000 : 0;
  return Math.max(0, (Number(p.age_s) || 0) + since);
}

function ago(s) {
  if (s < 60) return t("seconds_ago", { s: Math.round(s) });
  if (s < 3600) return t("minutes_ago", { n: Math.floor(s / 60) });
  return t("hours_ago", { n: Math.floor(s / 3600) });
}

function freshness() {
  if (!state.lastOk) return "unknown";
  return Date.now() - state.lastOk < STALE_MS ? "live" : "stale";
}

// -- the list

function renderList() {
  const ul = $("list");
  ul.replaceChildren();
  for (const d of state.list) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = `dispatch prio-${d.priority}`;
    if (state.unread.has(d.id)) b.classList.add("is-new");
    b.dataset.id = String(d.id);
    if (state.unread.has(d.id)) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = t("new_dispatch_badge");
      b.append(badge, " ");
    }
    b.append(`#${d.id} ${kindText(d)} — ${t(`status_${d.status}`)}`);
    if (d.id === state.selected) b.setAttribute("aria-current", "true");
    b.addEventListener("click", () => select(d.id));
    li.append(b);
    ul.append(li);
  }
  show($("none"), state.list.length === 0);
  if (state.selected && !state.list.some((d) => d.id === state.selected)) state.selected = null;
  renderDetail();
}

// -- the detail: whom to go to, where, the operator's notes

// The positions of a dispatch to draw: its target, and him only where the server gave him
// apart (never the target relabelled, never one label for the other).
function positions(d) {
  const out = [];
  const whom = whomOf(d.target);
  if (whom && placed(d.target)) out.push({ whom, p: d.target });
  if (whom !== "offender" && placed(d.offender)) out.push({ whom: "offender", p: d.offender });
  return out;
}

function positionText(whom, p, target) {
  const parts = [t(`pin_${whom}`), `${clock(p.fix_time)} (${ago(ageNow(p))})`];
  if (p.accuracy_m != null) parts.push(t("accuracy_pm", { m: Math.round(p.accuracy_m) }));
  if (state.me) {
    parts.push(
      t("from_me", { distance: km(distanceM(state.me, p)), dir: compass(bearingDeg(state.me, p)) }),
    );
  } else if (target) {
    parts.push(t("from_whom", { whom: t(`who_${target.whom}`), distance: km(distanceM(target.p, p)) }));
  }
  return parts.join(" · ");
}

function renderPositions(d) {
  const [first, second] = positions(d);
  const whom = whomOf(d.target);
  $("headline").textContent = whom && first ? t(`go_${whom}`) : t("go_unknown");
  $("headline").dataset.whom = whom && first ? whom : "unknown";
  $("detail-target").textContent = first && first.whom === whom ? positionText(whom, first.p) : "";
  show($("detail-target"), Boolean(first && first.whom === whom));
  const him = [first, second].find((x) => x && x.whom === "offender" && x.whom !== whom);
  $("detail-offender").textContent = him ? positionText("offender", him.p, first) : "";
  show($("detail-offender"), Boolean(him));
  const old = first && first.whom === whom && ageNow(first.p) > OLD_TARGET_S;
  $("target-old").textContent = old
    ? t("target_old", { whom: t(`pin_${whom}`), age: ago(ageNow(first.p)) })
    : "";
  show($("target-old"), Boolean(old));
}

function renderLegend(items) {
  const ul = $("legend");
  ul.replaceChildren();
  for (const it of items) {
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `swatch pin-${it.kind}`;
    swatch.setAttribute("aria-hidden", "true");
    li.append(swatch, it.label);
    ul.append(li);
  }
  show(ul, items.length > 0);
}

function renderNavigation(target) {
  show($("nav-choice"), Boolean(target));
  if (!target) return;
  // every link hands these coordinates, and nothing else of the dispatch, to a maps provider
  const { lat, lon } = target.p;
  const dest = encodeURIComponent(t("nav_dest"));
  $("nav-geo").href = `geo:${lat},${lon}`;
  $("nav-apple").href = `https://maps.apple.com/?daddr=${lat},${lon}`;
  $("nav-kakao").href = `https://map.kakao.com/link/to/${dest},${lat},${lon}`;
  $("nav-naver").href =
    `nmap://route/walk?dlat=${lat}&dlng=${lon}&dname=${dest}&appname=${encodeURIComponent(NAVER_APP)}`;
}

// The operator's instruction first, then every note, newest first; always as text.
function renderNotes(d) {
  const notes = [...(d.notes || [])].sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0));
  let instruction = d.dispatch_note;
  if (instruction == null) instruction = notes.find((n) => n.action === "dispatch")?.note ?? null;
  $("dispatch-note").textContent = instruction || t("dispatch_note_none");
  $("dispatch-note").classList.toggle("empty", !instruction);
  const ol = $("notes");
  ol.replaceChildren();
  let skipped = false;
  for (const n of notes) {
    if (!skipped && n.action === "dispatch" && n.note === instruction) {
      skipped = true; // shown above
      continue;
    }
    const li = document.createElement("li");
    const when = document.createElement("span");
    when.className = "note-meta";
    when.textContent = `${clock(n.at)} · ${t(`note_action_${n.action}`)}`;
    const text = document.createElement("span");
    text.textContent = n.note;
    li.append(when, " ", text);
    ol.append(li);
  }
  if (!ol.children.length) {
    const li = document.createElement("li");
    li.className = "hint";
    li.textContent = t("notes_none");
    ol.append(li);
  }
}

function renderDetail() {
  const d = state.list.find((x) => x.id === state.selected);
  show($("detail"), Boolean(d));
  if (!d) return;
  $("detail-title").textContent = `#${d.id} ${kindText(d)}`;
  renderPositions(d);
  const found = positions(d);
  const target = found.find((x) => x.whom === whomOf(d.target));
  renderNavigation(target);
  renderNotes(d);
  show($("arrive"), d.status === "dispatched");
  if (!state.map) state.map = new MapView($("map"), document.body.dataset.tiles, "© OpenStreetMap");
  const items = found.map(({ whom, p }) => ({ kind: whom, ...p, label: t(`pin_${whom}`) }));
  if (state.me) items.push({ kind: "me", ...state.me, label: t("map_me") });
  renderLegend(items);
  state.map.resize();
  state.map.draw(items);
  renderFreshness();
}

function select(id) {
  state.selected = id;
  state.unread.delete(id);
  $("detail-state").textContent = "";
  if (!state.unread.size) show($("new-banner"), false);
  renderList();
}

// -- honest freshness: never show an old list as if it were live

function renderFreshness() {
  const f = freshness();
  document.body.dataset.freshness = f;
  const note = $("stale-note");
  if (f === "live") {
    show(note, false);
  } else {
    note.textContent =
      f === "stale"
        ? t("stale_detail", { time: clock(new Date(state.lastOk).toISOString()).slice(0, 5) })
        : t("stale_unknown");
    show(note, true);
  }
  const d = state.list.find((x) => x.id === state.selected);
  if (d && !$("detail").hidden) renderPositions(d); // ages move on
}

function renderConnection() {
  const el = $("conn");
  const f = freshness();
  el.dataset.state = f === "live" ? "live" : "offline";
  el.textContent =
    f === "live"
      ? t("conn_updated", { time: clock(new Date(state.lastOk).toISOString()) })
      : state.lastOk
        ? t("conn_stale", { time: clock(new Date(state.lastOk).toISOString()) })
        : t("conn_connecting");
  renderFreshness();
}

// -- a new dispatch: banner, highlight, vibration, a notification if allowed

function remember(ids) {
  for (const id of ids) state.seen.add(id);
  sessionStorage.setItem(SEEN_KEY, JSON.stringify([...state.seen]));
}

async function announce(fresh) {
  const what = fresh.map((d) => `#${d.id} ${kindText(d)}`).join(", ");
  $("new-text").textContent = t("new_dispatch", { what });
  $("new-banner").dataset.id = String(fresh[0].id);
  show($("new-banner"), true);
  if (navigator.vibrate) navigator.vibrate([300, 150, 300]);
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  // kind and priority only: a notification on a lock screen shows no place and no name
  const body = t("notification_dispatch", { what });
  try {
    // the worker may still be installing; without one within 3 s, a page notification
    const ready = "serviceWorker" in navigator ? navigator.serviceWorker.ready : null;
    const reg = ready && (await Promise.race([ready, new Promise((r) => setTimeout(r, 3000))]));
    if (reg) await reg.showNotification(t("field_title"), { body, tag: "dispatch" });
    else new Notification(t("field_title"), { body, tag: "dispatch" });
  } catch {
    // the banner and the vibration have told the officer already
  }
}

function noticeNew(list) {
  const fresh = list.filter((d) => !state.seen.has(d.id));
  if (!fresh.length) return;
  remember(fresh.map((d) => d.id));
  for (const d of fresh) state.unread.add(d.id);
  announce(fresh);
}

function renderNotify() {
  const can = "Notification" in window;
  show($("notify-on"), can && Notification.permission !== "granted");
  $("notify-state").textContent = "";
}

async function askNotify() {
  const p = await Notification.requestPermission();
  renderNotify();
  $("notify-state").textContent = p === "granted" ? t("notify_granted") : t("notify_denied");
}

// -- polling, own position, actions

async function poll() {
  if (!session.token) return;
  try {
    const r = await api("/field/dispatches");
    state.list = r.dispatches;
    state.lastOk = Date.now();
    noticeNew(state.list);
    renderList();
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) signOut("session_expired");
  }
  renderConnection();
}

async function report() {
  if (!state.me || !$("on-duty").checked || Date.now() - state.lastSent < REPORT_MS) return;
  state.lastSent = Date.now();
  try {
    await api("/field/location", {
      method: "POST",
      body: { lat: state.me.lat, lon: state.me.lon, accuracy_m: state.me.accuracy_m },
    });
    $("duty-state").textContent = t("share_sent", { time: clock(new Date().toISOString()) });
  } catch {
    state.lastSent = 0;
    $("duty-state").textContent = t("share_failed");
  }
}

function duty(on) {
  if (on && navigator.geolocation) {
    state.watch = navigator.geolocation.watchPosition(
      (p) => {
        state.me = { lat: p.coords.latitude, lon: p.coords.longitude, accuracy_m: p.coords.accuracy };
        report();
        renderDetail();
      },
      () => ($("duty-state").textContent = t("share_denied")),
      { enableHighAccuracy: true, maximumAge: 10000 },
    );
    $("duty-state").textContent = t("share_on");
  } else {
    if (state.watch !== null) navigator.geolocation.clearWatch(state.watch);
    state.watch = null;
    state.lastSent = 0;
    $("duty-state").textContent = t("share_off");
  }
}

function signOut(reason) {
  session.clear();
  duty(false);
  state.list = [];
  state.selected = null;
  state.lastOk = null;
  state.seen = new Set();
  state.unread = new Set();
  show($("new-banner"), false);
  $("on-duty").checked = false;
  $("login-error").textContent = reason ? t(reason) : "";
  screen("login");
  renderConnection();
}

async function act(path, body, done) {
  const id = state.selected;
  try {
    await api(`/field/dispatches/${id}/${path}`, { method: "POST", body });
    $("detail-state").textContent = t(done);
  } catch (e) {
    $("detail-state").textContent = t("action_failed");
  }
  await poll();
}

// A false alarm closes the incident (a silent SOS among them): asked once more, with a reason.
function confirmFalseAlarm() {
  const reason = $("false-reason");
  reason.value = $("note").value;
  reason.removeAttribute("aria-invalid");
  $("false-reason-error").textContent = "";
  $("confirm-false").showModal();
  reason.focus();
}

function submitFalseAlarm(e) {
  e.preventDefault();
  const reason = $("false-reason").value.trim();
  if (!reason) {
    $("false-reason").setAttribute("aria-invalid", "true");
    $("false-reason-error").textContent = t("reason_required");
    $("false-reason").focus();
    return;
  }
  $("confirm-false").close();
  $("note").value = "";
  act("outcome", { outcome: "false_alarm", note: reason }, "outcome_done");
}

function setupCall() {
  // the control room only: calling her back could give away a silent SOS
  const number = (document.body.dataset.controlRoom || "").replace(/[^+0-9]/g, "");
  show($("call-room"), number.length > 2);
  if (number.length > 2) $("call-room").href = `tel:${number}`;
}

async function main() {
  await loadLang(preferredLang());
  await registerWorker("/field/sw.js");
  setupCall();
  $("lang").addEventListener("click", async () => {
    await loadLang(document.documentElement.lang === "ko" ? "en" : "ko");
    renderList();
    renderConnection();
    renderNotify();
  });
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await login($("username").value, $("password").value, "field_officer", $("totp").value);
      $("password").value = "";
      $("totp").value = "";
      screen("duty");
      renderNotify();
      poll();
    } catch (err) {
      // an officer who enrolled a second factor is asked for its code
      const code = { totp_required: "totp_needed", totp_invalid: "totp_wrong" }[err.code];
      if (code) {
        show($("totp-row"), true);
        $("totp").focus();
      }
      $("login-error").textContent = t(
        code || (err.status === 429 ? "login_throttled" : "login_failed"),
      );
    }
  });
  $("on-duty").addEventListener("change", (e) => duty(e.target.checked));
  $("notify-on").addEventListener("click", askNotify);
  $("new-open").addEventListener("click", () => {
    select(Number($("new-banner").dataset.id));
    show($("new-banner"), false);
    $("detail").scrollIntoView();
    $("detail-title").setAttribute("tabindex", "-1");
    $("detail-title").focus();
  });
  $("new-dismiss").addEventListener("click", () => show($("new-banner"), false));
  $("arrive").addEventListener("click", () => act("arrive", { note: "" }, "arrived_done"));
  $("outcome-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const outcome = new FormData(e.target).get("outcome");
    if (outcome === "false_alarm") {
      confirmFalseAlarm();
      return;
    }
    act("outcome", { outcome, note: $("note").value }, "outcome_done");
    $("note").value = "";
  });
  $("confirm-false-form").addEventListener("submit", submitFalseAlarm);
  $("confirm-false-cancel").addEventListener("click", () => $("confirm-false").close());
  $("logout").addEventListener("click", () => signOut(""));
  setInterval(poll, POLL_MS);
  setInterval(renderConnection, 1000);
  document.body.dataset.ready = "1";
  if (session.token && session.role === "field_officer") {
    screen("duty");
    renderNotify();
    poll();
  } else screen("login");
}

main();
