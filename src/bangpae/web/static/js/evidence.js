// Evidence of an SOS: a bounded audio recording made on her phone, kept in a queue in
// IndexedDB while the phone is offline, and uploaded to the SOS it belongs to
// (docs/evidence.md). Nothing is recorded unless she turned it on once in her settings.
import { refreshSession, session } from "./common.js";

const CONSENT = "evidence-consent";
const DB = "bangpae-evidence";
const STORE = "queue";
export const MAX_SECONDS = 60; // one recording; the server keeps 8 MB of one at most
// The containers the server keeps, in the order tried: Chromium and Android record WebM,
// Firefox Ogg, Safari MP4 (AAC).
const TYPES = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/ogg", "audio/mp4"];
const BITS_PER_SECOND = 32000; // speech stays clear; a minute is about 240 kB
const TRIES = 3; // per item and flush; a network failure or 5xx keeps it for the next one
const active = new Set(); // recordings in progress, stopped and thrown away by clearEvidence

// -- consent: off unless she turned it on -------------------------------------------------

export function evidenceConsent() {
  return localStorage.getItem(CONSENT) === "1";
}

export function setEvidenceConsent(on) {
  if (on) localStorage.setItem(CONSENT, "1");
  else localStorage.removeItem(CONSENT);
}

// -- recording ---------------------------------------------------------------------------

export function supportedType() {
  if (typeof MediaRecorder === "undefined") return null;
  return TYPES.find((type) => MediaRecorder.isTypeSupported(type)) || null;
}

// Record the microphone for `seconds` (1 to MAX_SECONDS) or until stop(); the handle's
// `blob` is a promise of the recording, `recordedAt` when it started (ISO).
export async function startRecording({ seconds = 30 } = {}) {
  if (!evidenceConsent()) throw new Error("recording after an SOS is off in her settings");
  const mimeType = supportedType();
  if (!mimeType) throw new Error("this browser records none of the kept audio types");
  const limit = Math.min(MAX_SECONDS, Math.max(1, Number(seconds) || 1));
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
  const recorder = new MediaRecorder(stream, { mimeType, audioBitsPerSecond: BITS_PER_SECOND });
  const chunks = [];
  let timer = null;
  let discarded = false;
  const blob = new Promise((resolve, reject) => {
    recorder.ondataavailable = (e) => {
      if (e.data && e.data.size) chunks.push(e.data);
    };
    recorder.onerror = (e) => reject(e.error || new Error("recording failed"));
    recorder.onstop = () => {
      clearTimeout(timer);
      stream.getTracks().forEach((track) => track.stop()); // the microphone is let go
      active.delete(handle);
      if (discarded) reject(new Error("recording discarded"));
      else resolve(new Blob(chunks, { type: recorder.mimeType.split(";")[0] || mimeType }));
    };
  });
  const handle = {
    mimeType,
    recordedAt: new Date().toISOString(),
    blob,
    stop() {
      if (recorder.state !== "inactive") recorder.stop();
      return blob;
    },
    discard() {
      discarded = true;
      blob.catch(() => {});
      if (recorder.state !== "inactive") recorder.stop();
    },
  };
  active.add(handle);
  recorder.start();
  timer = setTimeout(() => handle.stop(), limit * 1000);
  return handle;
}

// -- the offline queue -------------------------------------------------------------------

let opened = null;

function database() {
  if (!opened) {
    opened = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB, 1);
      req.onupgradeneeded = () => req.result.createObjectStore(STORE, { autoIncrement: true });
      req.onsuccess = () => {
        req.result.onversionchange = () => {
          req.result.close();
          opened = null;
        };
        resolve(req.result);
      };
      req.onerror = () => {
        opened = null;
        reject(req.error);
      };
    });
  }
  return opened;
}

async function inStore(mode, work) {
  const db = await database();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const result = work(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(result && "result" in result ? result.result : undefined);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

// Keep a recording of an SOS until it is uploaded; its key in the queue.
export async function queueEvidence(incidentId, blob, recordedAt) {
  const item = {
    incidentId: Number(incidentId),
    blob,
    recordedAt: recordedAt || null,
    queuedAt: new Date().toISOString(),
  };
  return inStore("readwrite", (store) => store.add(item));
}

export async function queuedEvidence() {
  const db = await database();
  return new Promise((resolve, reject) => {
    const out = [];
    const req = db.transaction(STORE, "readonly").objectStore(STORE).openCursor();
    req.onsuccess = () => {
      const cursor = req.result;
      if (!cursor) return resolve(out);
      out.push({ key: cursor.key, ...cursor.value });
      cursor.continue();
    };
    req.onerror = () => reject(req.error);
  });
}

function forget(key) {
  return inStore("readwrite", (store) => store.delete(key));
}

// -- uploading ---------------------------------------------------------------------------

// POST a recording with her session (refreshed once on 401); the Response, or a
// TypeError when the network is down.
export async function sendEvidence(path, init, retried = false) {
  const headers = { ...init.headers, Accept: "application/json" };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  const r = await fetch(`/api/v1${path}`, { ...init, headers });
  if (r.status === 401 && !retried && session.refreshToken) {
    if ((await refreshSession()) === "ok") return sendEvidence(path, init, true);
  }
  return r;
}

const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Whether a failed upload is worth trying again: the network, the server, her session or
// a rate limit; any other refusal (not her SOS, too large, not audio) never changes.
function transient(status) {
  return status === null || status >= 500 || status === 401 || status === 429;
}

// Upload every queued recording, oldest first. `api(path, init)` sends one and returns
// the Response (default: sendEvidence). Returns what was sent, dropped and kept.
export async function flushEvidence(api = sendEvidence, { backoffMs = 1000 } = {}) {
  const outcome = { sent: [], dropped: [], kept: 0 };
  for (const item of await queuedEvidence()) {
    let status = null;
    let body = null;
    for (let attempt = 0; attempt < TRIES; attempt++) {
      if (attempt) await wait(backoffMs * 2 ** (attempt - 1));
      try {
        const headers = { "Content-Type": item.blob.type || "application/octet-stream" };
        if (item.recordedAt) headers["X-Recorded-At"] = item.recordedAt;
        const r = await api(`/victim/sos/${item.incidentId}/evidence`, {
          method: "POST",
          headers,
          body: item.blob,
        });
        status = r.status;
        body = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
      } catch {
        status = null; // offline, or the connection dropped
      }
      if (!transient(status)) break;
    }
    if (status !== null && status >= 200 && status < 300) {
      await forget(item.key);
      outcome.sent.push({ incidentId: item.incidentId, ...body });
    } else if (!transient(status)) {
      await forget(item.key); // refused for good: keeping it would retry it forever
      outcome.dropped.push({ incidentId: item.incidentId, status, detail: body && body.detail });
    } else {
      outcome.kept += 1;
    }
  }
  return outcome;
}

// Quick exit: stop any recording and forget every queued one, at once.
export async function clearEvidence() {
  for (const handle of [...active]) handle.discard();
  await inStore("readwrite", (store) => store.clear());
  const db = await opened;
  if (db) db.close();
  opened = null;
  await new Promise((resolve) => {
    const req = indexedDB.deleteDatabase(DB);
    req.onsuccess = req.onerror = req.onblocked = () => resolve();
  });
}
