// Places of refuge near her (docs/refuges.md): the server decides which to show and the
// direction away from him; this module only asks and draws. Nothing here reads his position.

import { km } from "./common.js";

const POINTS = ["n", "ne", "e", "se", "s", "sw", "w", "nw"];
const KINDS = new Set([
  "police_box",
  "police_station",
  "store_24h",
  "station",
  "hospital",
  "shelter",
  "other",
]);

function compassWith(t, deg) {
  return t(`dir_${POINTS[Math.round(deg / 45) % 8]}`);
}

// The places nearest her position `me` ({lat, lon}), or null without a position.
// `api` is common.js's api(path) (it sends her token and renews it).
export async function loadRefuges(api, me, limit = 5) {
  if (!me || !Number.isFinite(me.lat) || !Number.isFinite(me.lon)) return null;
  const q = new URLSearchParams({
    lat: me.lat.toFixed(6),
    lon: me.lon.toFixed(6),
    limit: String(limit),
  });
  return api(`/victim/refuges?${q}`);
}

// "Move west, away from him", when the server gives a direction (only while he is shown).
export function awayText(data, t) {
  if (!data || data.away_deg == null) return null;
  return t("advice_move_away", { direction: compassWith(t, data.away_deg) });
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Draw the list into `listEl` (a <ul> or <ol>): name in the page's language, kind,
// distance and compass direction, hours, and a call link when the place has a phone.
// Each place is a few block lines, readable before any style is applied.
export function renderRefuges(listEl, data, t) {
  const en = document.documentElement.lang === "en";
  listEl.replaceChildren();
  const places = (data && data.refuges) || [];
  if (!places.length) {
    listEl.append(el("li", "refuge refuge-none", t("refuges_none")));
    return;
  }
  for (const p of places) {
    const li = el("li", "refuge");
    const name = en ? p.name.en : p.name.ko;
    const kind = KINDS.has(p.kind) ? p.kind : "other";
    const head = el("div", "refuge-head");
    head.append(el("strong", "refuge-name", name), " · ", el("span", "refuge-kind", t(`refuge_kind_${kind}`)));
    const where = el("div", "refuge-where");
    where.append(
      el(
        "span",
        "refuge-distance",
        t("refuge_where", { distance: km(p.distance_m), direction: compassWith(t, p.bearing_deg) }),
      ),
    );
    if (p.hours) {
      const hours = p.hours === "24h" ? t("refuge_open_24h") : t("refuge_hours", { hours: p.hours });
      where.append(" · ", el("span", "refuge-hours", hours));
    }
    li.append(head, where);
    const digits = p.phone ? p.phone.replace(/[^0-9+]/g, "") : "";
    if (digits) {
      const a = el("a", "refuge-call", t("refuge_call", { phone: p.phone }));
      a.href = `tel:${digits}`;
      a.setAttribute("aria-label", t("refuge_call_label", { name, phone: p.phone }));
      const call = el("div", "refuge-phone");
      call.append(a);
      li.append(call);
    }
    listEl.append(li);
  }
  if (data.avoided) listEl.append(el("li", "refuge refuge-avoided", t("refuges_avoided")));
}
