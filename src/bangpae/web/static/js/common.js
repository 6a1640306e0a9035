// Shared by the victim app and the field app: messages, session, API, live stream, geometry.

const catalogs = {};
let current = "ko";

export async function loadLang(code) {
  const wanted = code === "en" ? "en" : "ko";
  if (!catalogs[wanted]) {
    const r = await fetch(`/static/locales/${wanted}.json`);
    catalogs[wanted] = await r.json();
  }
  current = wanted;
  localStorage.setItem("lang", wanted);
  document.documentElement.lang = wanted;
  for (const el of document.querySelectorAll("[data-i18n]")) {
    el.textContent = t(el.dataset.i18n);
  }
  for (const el of document.querySelectorAll("[data-i18n-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  }
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) {
    el.setAttribute("placeholder", t(el.dataset.i18nPlaceholder));
  }
  return wanted;
}

export function lang() {
  return current;
}

export function preferredLang() {
  return localStorage.getItem("lang") || document.documentElement.lang || "ko";
}

// A message in the current language, with {name} placeholders filled in.
export function t(key, vars = {}) {
  const text = (catalogs[current] && catalogs[current][key]) || key;
  return text.replace(/\{(\w+)\}/g, (_, k) => (k in vars ? String(vars[k]) : `{${k}}`));
}

export function show(el, visible) {
  el.hidden = !visible;
}

// -- session: kept for this tab only, so closing it (or a quick exit) leaves nothing behind.
// The access token lives minutes; its refresh token (good for one use) gets the next pair
// shortly before it expires, and once more after a 401.

const REFRESH_EARLY_MS = 60000;
let refreshTimer = null;
let refreshing = null;

// Ask the server to end a session; fire-and-forget, and it outlives a page change.
function revoke(token, refreshToken) {
  if (!token && !refreshToken) return;
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  fetch("/api/v1/auth/logout", {
    method: "POST",
    headers,
    body: JSON.stringify({ refresh_token: refreshToken || null }),
    keepalive: true,
  }).catch(() => {});
}

export const session = {
  get token() {
    return sessionStorage.getItem("token");
  },
  get role() {
    return sessionStorage.getItem("role");
  },
  get refreshToken() {
    return sessionStorage.getItem("refresh");
  },
  get expires() {
    return Number(sessionStorage.getItem("expires") || 0);
  },
  save(token, role, expiresIn, refreshToken) {
    sessionStorage.setItem("token", token);
    sessionStorage.setItem("role", role);
    sessionStorage.setItem("expires", String(Date.now() + expiresIn * 1000));
    if (refreshToken) sessionStorage.setItem("refresh", refreshToken);
    scheduleRefresh();
  },
  // Forget everything in this tab at once, then tell the server the session is over.
  clear() {
    const token = this.token;
    const refreshToken = this.refreshToken;
    sessionStorage.clear();
    clearTimeout(refreshTimer);
    revoke(token, refreshToken);
  },
};

function scheduleRefresh(delayMs) {
  clearTimeout(refreshTimer);
  if (!session.refreshToken) return;
  const wait = delayMs ?? Math.max(5000, session.expires - Date.now() - REFRESH_EARLY_MS);
  refreshTimer = setTimeout(async () => {
    const outcome = await refreshSession();
    if (outcome === "offline") scheduleRefresh(15000);
  }, wait);
}

// Exchange the refresh token for a new pair; one exchange at a time (a refresh token
// presented twice ends the session). Resolves to "ok", "ended" or "offline".
export function refreshSession() {
  if (!refreshing) {
    refreshing = (async () => {
      const used = session.refreshToken;
      if (!used) return "ended";
      let r;
      try {
        r = await fetch("/api/v1/auth/refresh", {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify({ refresh_token: used }),
        });
      } catch {
        return "offline";
      }
      if (!r.ok) return r.status === 401 ? "ended" : "offline";
      const data = await r.json();
      if (session.refreshToken !== used) return "ended"; // signed out meanwhile
      session.save(data.access_token, data.role, data.expires_in, data.refresh_token);
      return "ok";
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

if (session.refreshToken) scheduleRefresh(); // a reloaded page keeps its session fresh

export class ApiError extends Error {
  constructor(status, detail, code) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.code = code || null;
  }
}

export async function api(path, { method = "GET", body } = {}, retried = false) {
  const headers = { Accept: "application/json" };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 401 && !retried && session.refreshToken) {
    if ((await refreshSession()) === "ok") return api(path, { method, body }, true);
  }
  const data = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
  if (!r.ok) throw new ApiError(r.status, data && (data.detail || data.title), data && data.code);
  return data;
}

// Sign in; a user with a second factor also gives the code from the authenticator app
// (without it the server answers 401 with code "totp_required").
export async function login(username, password, role, totp) {
  const body = { username, password };
  if (totp) body.totp = totp;
  const r = await fetch("/api/v1/auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
  if (!r.ok) throw new ApiError(r.status, data && data.detail, data && data.code);
  if (data.role !== role) {
    revoke(data.access_token, data.refresh_token);
    throw new ApiError(403, "role");
  }
  session.save(data.access_token, data.role, data.expires_in, data.refresh_token);
  return data;
}

// A WebSocket that authenticates with its first message and reconnects on its own,
// backing off up to 15 s. onState receives "connecting", "live", "offline" or "denied".
// The server speaks at least every 20 s; silence for 45 s counts as a dead link.
const SILENCE_MS = 45000;

export function liveStream(path, { onMessage, onState }) {
  let ws = null;
  let delay = 1000;
  let stopped = false;
  let timer = null;
  let heard = Date.now();
  const drop = () => {
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close();
  };
  const watchdog = setInterval(() => {
    if (ws && ws.readyState === WebSocket.OPEN && Date.now() - heard > SILENCE_MS) drop();
  }, 5000);
  window.addEventListener("offline", () => {
    onState("offline");
    drop();
  });
  const open = async () => {
    if (stopped) return;
    onState("connecting");
    // a token about to expire is renewed first: the stream checks it only when it opens
    if (session.refreshToken && session.expires - Date.now() < 5000) await refreshSession();
    if (stopped) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    ws = new WebSocket(`${scheme}://${location.host}/api/v1${path}`);
    ws.addEventListener("open", () => ws.send(JSON.stringify({ token: session.token })));
    ws.addEventListener("message", (m) => {
      heard = Date.now();
      delay = 1000;
      onState("live");
      onMessage(JSON.parse(m.data));
    });
    ws.addEventListener("close", (e) => {
      if (stopped) return;
      if (e.code === 4401 || e.code === 4403) {
        onState("denied");
        return;
      }
      onState("offline");
      timer = setTimeout(open, delay);
      delay = Math.min(delay * 2, 15000);
    });
  };
  open();
  window.addEventListener("online", () => {
    if (ws && ws.readyState === WebSocket.CLOSED && !stopped) {
      clearTimeout(timer);
      delay = 1000;
      open();
    }
  });
  return {
    close() {
      stopped = true;
      clearTimeout(timer);
      clearInterval(watchdog);
      if (ws) ws.close();
    },
  };
}

// -- geometry for what is shown to people (the decisions are the server's)

const R = 6371008.8;
const rad = (d) => (d * Math.PI) / 180;

export function distanceM(a, b) {
  const dlat = rad(b.lat - a.lat);
  const dlon = rad(b.lon - a.lon);
  const h =
    Math.sin(dlat / 2) ** 2 + Math.cos(rad(a.lat)) * Math.cos(rad(b.lat)) * Math.sin(dlon / 2) ** 2;
  return 2 * R * Math.asin(Math.sqrt(h));
}

export function bearingDeg(a, b) {
  const y = Math.sin(rad(b.lon - a.lon)) * Math.cos(rad(b.lat));
  const x =
    Math.cos(rad(a.lat)) * Math.sin(rad(b.lat)) -
    Math.sin(rad(a.lat)) * Math.cos(rad(b.lat)) * Math.cos(rad(b.lon - a.lon));
  return ((Math.atan2(y, x) * 180) / Math.PI + 360) % 360;
}

const POINTS = ["n", "ne", "e", "se", "s", "sw", "w", "nw"];

export function compass(deg) {
  return t(`dir_${POINTS[Math.round(deg / 45) % 8]}`);
}

export function clock(iso) {
  return new Date(iso).toLocaleTimeString(lang() === "en" ? "en-GB" : "ko-KR", {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hour12: false,
  });
}

// Hours and minutes only: "as of 14:05".
export function hm(iso) {
  return new Date(iso).toLocaleTimeString(lang() === "en" ? "en-GB" : "ko-KR", {
    hour: "2-digit",
    minute: "2-digit",
    hour12: false,
  });
}

// A distance; the number and its unit are never split over two lines.
export function km(m) {
  return m >= 1000 ? `${(m / 1000).toFixed(1)}\u00a0km` : `${Math.round(m)}\u00a0m`;
}

export async function registerWorker(path) {
  if (!("serviceWorker" in navigator)) return null;
  try {
    return await navigator.serviceWorker.register(path);
  } catch {
    return null; // the app works without its offline shell
  }
}
