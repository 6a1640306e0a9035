// Offline shell for the victim and field apps. The API is never cached: a status
// shown from a cache would be a stale status shown as current. The offline base map
// (docs/maps.md) is part of the shell, so the map draws Korea with no network; street
// map byte ranges are not cached here (the browser's HTTP cache keeps what it read).
const VERSION = "bangpae-shell-v5";
const scope = new URL(self.registration.scope).pathname; // "/app/" or "/field/"
const SHARED = [
  "/static/css/app.css",
  "/static/js/common.js",
  "/static/js/map.js",
  "/static/leaflet/leaflet.css",
  "/static/leaflet/leaflet-src.esm.js",
  "/static/locales/ko.json",
  "/static/locales/en.json",
  "/static/icons/shield.svg",
  "/static/icons/notes.svg",
  "/static/icons/weather.svg",
  "/today",
  "/static/css/today.css",
  "/basemap/index.json",
  "/basemap/korea.json",
];
// The victim app's modules: its SOS recording (docs/evidence.md) and places of refuge.
const VICTIM = ["/static/js/victim.js", "/static/js/evidence.js", "/static/js/refuges.js"];
const SHELL = [scope, `${scope}manifest.webmanifest`, ...(scope === "/field/" ? ["/static/js/field.js"] : VICTIM), ...SHARED];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(VERSION).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== VERSION).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (
    event.request.method !== "GET" ||
    url.origin !== location.origin ||
    url.pathname.startsWith("/api/") ||
    event.request.headers.has("range")
  ) {
    return; // the network, always
  }
  // Network first, so an update shows at once; the cached shell when offline.
  event.respondWith(
    fetch(event.request)
      .then((r) => {
        if (r.ok && SHELL.includes(url.pathname)) {
          const copy = r.clone();
          caches.open(VERSION).then((c) => c.put(url.pathname, copy));
        }
        return r;
      })
      .catch(() => caches.match(url.pathname).then((hit) => hit || Response.error())),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(
    self.clients.matchAll({ type: "window" }).then((list) => {
      const open = list.find((c) => new URL(c.url).pathname.startsWith(scope));
      return open ? open.focus() : self.clients.openWindow(scope);
    }),
  );
});

// Web Push: the server's notice, already in her language, never with a position. The
// tag is per order, so a newer notice replaces an older one on the lock screen.
self.addEventListener("push", (event) => {
  let msg = {};
  try {
    msg = event.data ? event.data.json() : {};
  } catch {
    msg = {};
  }
  const urgent = msg.priority === "critical";
  event.waitUntil(
    self.registration.showNotification(msg.title || "bangpae", {
      body: msg.body || "",
      tag: msg.tag || "bangpae",
      renotify: true,
      requireInteraction: urgent,
      silent: msg.priority === "normal",
      vibrate: urgent ? [600, 200, 600, 200, 600] : [200],
      data: { kind: msg.kind || "" },
    }),
  );
});
