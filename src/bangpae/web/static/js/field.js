// The field officer's app: dispatches assigned to me, where to go, arrival and outcome.
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
const REPORT_MS = 30000; // own position while on duty

const state = { list: [], selected: null, me: null, watch: null, lastOk: null, lastSent: 0, map: null };

function screen(name) {
  show($("login"), name === "login");
  show($("duty"), name === "duty");
}

function kindText(d) {
  return `${t(`kind_${d.kind}`)} · ${t(`priority_${d.priority}`)}`;
}

function renderList() {
  const ul = $("list");
  ul.replaceChildren();
  for (const d of state.list) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = `dispatch prio-${d.priority}`;
    b.dataset.id = String(d.id);
    b.textContent = `#${d.id} ${kindText(d)} — ${t(`status_${d.status}`)}`;
    b.addEventListener("click", () => select(d.id));
    li.append(b);
    ul.append(li);
  }
  show($("none"), state.list.length === 0);
  if (state.selected && !state.list.some((d) => d.id === state.selected)) state.selected = null;
  renderDetail();
}

function renderDetail() {
  const d = state.list.find((x) => x.id === state.selected);
  show($("detail"), Boolean(d));
  if (!d) return;
  $("detail-title").textContent = `#${d.id} ${kindText(d)}`;
  const target = d.target;
  if (target) {
    const whom = t(`whom_${target.whom}`);
    let where = t("target_at", { whom, time: clock(target.fix_time) });
    if (state.me) {
      where += ` · ${km(distanceM(state.me, target))} ${compass(bearingDeg(state.me, target))}`;
    }
    $("detail-target").textContent = where;
    $("navigate").href = `geo:${target.lat},${target.lon}`;
    show($("navigate"), true);
  } else {
    $("detail-target").textContent = t("target_unknown");
    show($("navigate"), false);
  }
  show($("arrive"), d.status === "dispatched");
  if (!state.map) state.map = new MapView($("map"), document.body.dataset.tiles, "© OpenStreetMap");
  const items = [];
  if (target) items.push({ kind: "target", ...target, label: t(`whom_${target.whom}`) });
  if (state.me) items.push({ kind: "me", ...state.me, label: t("map_me") });
  state.map.resize();
  state.map.draw(items);
}

function select(id) {
  state.selected = id;
  $("detail-state").textContent = "";
  renderDetail();
}

function renderConnection() {
  const el = $("conn");
  const fresh = state.lastOk && Date.now() - state.lastOk < STALE_MS;
  el.dataset.state = fresh ? "live" : "offline";
  el.textContent = fresh
    ? t("conn_updated", { time: clock(new Date(state.lastOk).toISOString()) })
    : state.lastOk
      ? t("conn_stale", { time: clock(new Date(state.lastOk).toISOString()) })
      : t("conn_connecting");
}

async function poll() {
  if (!session.token) return;
  try {
    const r = await api("/field/dispatches");
    state.list = r.dispatches;
    state.lastOk = Date.now();
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
  $("on-duty").checked = false;
  $("login-error").textContent = reason ? t(reason) : "";
  screen("login");
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

async function main() {
  await loadLang(preferredLang());
  await registerWorker("/field/sw.js");
  $("lang").addEventListener("click", async () => {
    await loadLang(document.documentElement.lang === "ko" ? "en" : "ko");
    renderList();
    renderConnection();
  });
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await login($("username").value, $("password").value, "field_officer", $("totp").value);
      $("password").value = "";
      $("totp").value = "";
      screen("duty");
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
  $("arrive").addEventListener("click", () => act("arrive", { note: "" }, "arrived_done"));
  $("outcome-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const outcome = new FormData(e.target).get("outcome");
    act("outcome", { outcome, note: $("note").value }, "outcome_done");
    $("note").value = "";
  });
  $("logout").addEventListener("click", () => signOut(""));
  setInterval(poll, POLL_MS);
  setInterval(renderConnection, 1000);
  document.body.dataset.ready = "1";
  if (session.token && session.role === "field_officer") {
    screen("duty");
    poll();
  } else screen("login");
}

main();
