// A small Leaflet map: his position with an accuracy circle and heading, hers, a target.
//
// Layers, bottom to top (docs/maps.md): the offline base map of Korea's provinces and
// districts, served by bangpae and cached by the service worker, always; street maps
// from a PMTiles archive served by bangpae, when one is installed; an external tile
// server only when configured (tileUrl). No other host is asked for anything.
import * as L from "/static/leaflet/leaflet-src.esm.js";
import { t } from "./common.js";

const INDEX = "/basemap/index.json";
const VENDOR = "/static/vendor/protomaps-leaflet/protomaps-leaflet.js";
const PROVINCE_MAX_ZOOM = 10; // provinces are named up to here, districts from DISTRICT_MIN_ZOOM
const DISTRICT_MIN_ZOOM = 9;
const GRID_MIN_ZOOM = 12; // from here a district may be larger than the view
const LABEL_GAP = 6; // px kept free around a label
const PIN_SIDES = ["top", "bottom", "right", "left"];

function pageLang() {
  return document.documentElement.lang === "en" ? "en" : "ko";
}

// A flat delta-encoded ring or line of the base map file as [lat, lon] points.
function points(ints, scale) {
  const out = [];
  let x = 0;
  let y = 0;
  for (let i = 0; i < ints.length; i += 2) {
    x += ints[i];
    y += ints[i + 1];
    out.push([y / scale, x / scale]);
  }
  return out;
}

// Whether [lat, lon] lies inside a polygon given as rings of [lat, lon] (even-odd rule).
function inside(at, rings) {
  let hit = false;
  for (const ring of rings) {
    for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      const [yi, xi] = ring[i];
      const [yj, xj] = ring[j];
      if (yi > at[0] !== yj > at[0] && at[1] < ((xj - xi) * (at[0] - yi)) / (yj - yi) + xi) hit = !hit;
    }
  }
  return hit;
}

// The loaded base map: provinces and districts with their shapes and label points.
class Basemap {
  constructor(data) {
    const s = data.scale;
    this.provinces = data.provinces.map((p) => ({ ...p, at: [p.at[1] / s, p.at[0] / s], rank: 0 }));
    this.regions = data.regions.map((r) => {
      const polys = r.polys.map((rings) => rings.map((ring) => points(ring, s)));
      const bounds = L.latLngBounds(polys.flat(2));
      return { ...r, polys, bounds, at: [r.at[1] / s, r.at[0] / s], rank: 1 };
    });
    this.borders = data.borders.map((line) => points(line, s));
  }

  // Points of the district inside the view where its name may go, best first: its
  // label point if visible, then points of a grid over the view that fall well inside
  // it (half a cell from its border north and south), nearest the view's centre.
  anchors(region, view, zoom) {
    if (!view.intersects(region.bounds)) return [];
    const visible = view.contains(region.at);
    if (visible && zoom < GRID_MIN_ZOOM) return [region.at]; // small districts: one point
    const out = visible ? [[-1, region.at]] : [];
    const n = 8;
    const south = view.getSouth();
    const west = view.getWest();
    const dLat = (view.getNorth() - south) / (n + 1);
    const dLon = (view.getEast() - west) / (n + 1);
    const centre = view.getCenter();
    const within = (at) => region.polys.some((rings) => inside(at, rings));
    for (let i = 1; i <= n; i++) {
      for (let j = 1; j <= n; j++) {
        const at = [south + i * dLat, west + j * dLon];
        if (!within(at)) continue;
        const deep = within([at[0] + dLat / 2, at[1]]) && within([at[0] - dLat / 2, at[1]]);
        out.push([(deep ? 0 : 10) + ((at[0] - centre.lat) / dLat) ** 2 + ((at[1] - centre.lng) / dLon) ** 2, at]);
      }
    }
    return out.sort((x, y) => x[0] - y[0]).map(([, at]) => at);
  }
}

// Place names that never overlap: placed greedily, provinces first, then districts
// by size; a label whose box meets one already placed is left out at this zoom.
class PlaceLabels extends L.Layer {
  constructor(basemap) {
    super();
    this.basemap = basemap;
  }

  onAdd(map) {
    this.pane = map.getPane("placeLabels") || map.createPane("placeLabels");
    this.pane.classList.add("leaflet-zoom-hide"); // drawn again once a zoom ends
    this.pane.setAttribute("aria-hidden", "true"); // the names are scenery, not content
    this.redraw = () => this.draw();
    map.on("moveend zoomend resize", this.redraw);
    this.observer = new MutationObserver(this.redraw);
    this.observer.observe(document.documentElement, { attributes: true, attributeFilter: ["lang"] });
    this.draw();
  }

  onRemove(map) {
    map.off("moveend zoomend resize", this.redraw);
    this.observer.disconnect();
    L.DomUtil.remove(this.pane);
  }

  candidates() {
    const map = this._map;
    const zoom = map.getZoom();
    // Names are placed in the middle of the view, so none is cut at its edge.
    const view = map.getBounds().pad(-0.12);
    const out = [];
    if (zoom <= PROVINCE_MAX_ZOOM) {
      for (const p of this.basemap.provinces) if (view.contains(p.at)) out.push({ place: p, at: [p.at] });
    }
    if (zoom >= DISTRICT_MIN_ZOOM) {
      // Larger districts first: they have the room to take a name.
      const size = (r) => r.bounds.getNorthEast().distanceTo(r.bounds.getSouthWest());
      const regions = this.basemap.regions.filter((r) => view.intersects(r.bounds));
      regions.sort((a, b) => size(b) - size(a));
      for (const r of regions) out.push({ place: r, at: this.basemap.anchors(r, view, zoom) });
    }
    return out;
  }

  // What a name must not cover: the pins, their labels and the map's controls, in
  // container pixels.
  obstacles() {
    const map = this._map;
    const container = map.getContainer();
    const origin = container.getBoundingClientRect();
    const els = [
      ...map.getPane("markerPane").children,
      ...map.getPane("tooltipPane").children,
      ...container.querySelectorAll(".leaflet-control"),
    ];
    return els.map((el) => {
      const r = el.getBoundingClientRect();
      return L.bounds([r.left - origin.left, r.top - origin.top], [r.right - origin.left, r.bottom - origin.top]);
    });
  }

  draw() {
    const map = this._map;
    if (!map) return;
    this.pane.replaceChildren();
    const lang = pageLang();
    const placed = this.obstacles();
    for (const { place, at } of this.candidates()) {
      if (!at.length) continue;
      const el = L.DomUtil.create("span", `place place-${place.rank ? "district" : "province"}`, this.pane);
      el.textContent = (lang === "en" && place.en) || place.ko;
      el.lang = lang === "en" && place.en ? "en" : "ko";
      const w = el.offsetWidth / 2 + LABEL_GAP;
      const h = el.offsetHeight / 2 + LABEL_GAP;
      const free = at
        .map((ll) => map.latLngToContainerPoint(ll))
        .map((p) => [p, L.bounds([p.x - w, p.y - h], [p.x + w, p.y + h])])
        .find(([, box]) => !placed.some((b) => b.intersects(box)));
      if (!free) {
        el.remove();
        continue;
      }
      placed.push(free[1]);
      const p = map.containerPointToLayerPoint(free[0]);
      L.DomUtil.setPosition(el, L.point(Math.round(p.x - el.offsetWidth / 2), Math.round(p.y - el.offsetHeight / 2)));
    }
  }
}

async function loadBasemap(map, url) {
  // Its own pane under the tile pane: street tiles, where they load, cover it.
  map.createPane("basemap");
  const renderer = L.canvas({ pane: "basemap", padding: 0.5 });
  const r = await fetch(url);
  if (!r.ok) throw new Error(`base map: ${r.status}`);
  const basemap = new Basemap(await r.json());
  const land = basemap.regions.map((r) =>
    L.polygon(r.polys, { renderer, className: "bm-district", interactive: false, color: "#8a97a3", weight: 1, fillColor: "#eef1ea", fillOpacity: 1 }),
  );
  const borders = L.polyline(basemap.borders, { renderer, className: "bm-province", interactive: false, color: "#5a6672", weight: 2.5 });
  L.layerGroup([...land, borders]).addTo(map);
  const labels = new PlaceLabels(basemap);
  labels.addTo(map);
  return labels;
}

// protomaps-leaflet is a classic script that extends the global L; it is loaded only
// when an archive is installed.
function loadScript(src) {
  return new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = src;
    s.onload = resolve;
    s.onerror = () => reject(new Error(`cannot load ${src}`));
    document.head.append(s);
  });
}

async function loadStreets(map, streets) {
  if (!window.L) window.L = L;
  if (!window.protomapsL) await loadScript(VENDOR);
  const layer = window.protomapsL.leafletLayer({
    url: streets.url,
    flavor: "light",
    lang: pageLang(),
    maxDataZoom: streets.max_zoom,
    attribution: "© OpenStreetMap",
  });
  layer.addTo(map);
  return layer;
}

export class MapView {
  // new MapView(el, tileUrl, attribution): tileUrl (optional) is an external tile server
  // drawn over the offline layers; options.index is where the layers are described.
  constructor(el, tileUrl, attribution, options = {}) {
    this.el = el;
    this.map = L.map(el, { zoomControl: true, attributionControl: true });
    this.map.attributionControl.setPrefix(false);
    L.control.scale({ metric: true, imperial: false }).addTo(this.map);
    this.map.setView([37.5665, 126.978], 15);
    this.pinned = [];
    this.map.on("zoomend", () => this.labelPins(this.pinned));
    this.ready = this.loadLayers(options.index || INDEX).catch((e) => {
      el.dataset.basemap = "failed";
      console.warn(e);
    });
    if (tileUrl) {
      L.tileLayer(tileUrl, { maxZoom: 19, attribution }).addTo(this.map);
    }
    this.pins = L.layerGroup().addTo(this.map);
  }

  async loadLayers(index) {
    const r = await fetch(index);
    if (!r.ok) throw new Error(`map index: ${r.status}`);
    const described = await r.json();
    this.labels = await loadBasemap(this.map, described.boundaries);
    this.el.dataset.basemap = "boundaries";
    this.credit();
    new MutationObserver(() => this.credit()).observe(document.documentElement, {
      attributes: true,
      attributeFilter: ["lang"],
    });
    if (described.streets) {
      this.streets = await loadStreets(this.map, described.streets);
      this.el.dataset.basemap = "streets";
    }
  }

  // The boundaries' source is credited, as its licence asks, in the page's language.
  credit() {
    const control = this.map.attributionControl;
    if (this.credited) control.removeAttribution(this.credited);
    this.credited = t("map_credit_boundaries");
    control.addAttribution(this.credited);
  }

  // Redraw: items are {kind: "him"|"lastSeen"|"me"|"target", lat, lon, accuracy_m, heading_deg, label}
  draw(items) {
    this.pins.clearLayers();
    const bounds = [];
    const markers = [];
    for (const it of items) {
      const at = [it.lat, it.lon];
      bounds.push(at);
      if (it.accuracy_m) {
        L.circle(at, { radius: it.accuracy_m, className: `acc acc-${it.kind}`, weight: 1 }).addTo(this.pins);
      }
      const icon = L.divIcon({ className: `pin pin-${it.kind}`, iconSize: [22, 22] });
      const marker = L.marker(at, { icon, title: it.label, alt: it.label, keyboard: false });
      marker.addTo(this.pins);
      const el = marker.getElement();
      if (el && it.heading_deg != null && it.kind === "him") {
        el.classList.add("has-heading");
        el.style.setProperty("--heading", `${it.heading_deg}deg`);
      }
      if (it.label) markers.push([marker, it]);
    }
    // The view is fitted when someone appears or leaves, or a pin is out of view; a
    // redraw with the same people in view keeps the zoom and pan the reader chose.
    const who = items.map((it) => it.kind).join(",");
    const view = this.map.getBounds();
    if (who !== this.fitted || bounds.some((b) => !view.contains(b))) {
      const now = { animate: false }; // the labels are placed on the final view
      if (bounds.length === 1) this.map.setView(bounds[0], 16, now);
      else if (bounds.length > 1) this.map.fitBounds(bounds, { padding: [40, 40], maxZoom: 17, ...now });
      this.fitted = who;
    }
    this.labelPins(markers);
    if (this.labels) this.labels.draw(); // place names make way for the pins
  }

  // Pin labels on distinct sides so close pins do not hide each other's names: each
  // takes the first side (above, below, right, left) whose box meets no label placed.
  labelPins(markers) {
    this.pinned = markers;
    const placed = [];
    for (const [marker, it] of markers) {
      if (!marker.getTooltip()) marker.bindTooltip(it.label, { permanent: true, className: "pin-label" });
      const tip = marker.getTooltip();
      const free = (direction, offset) => {
        Object.assign(tip.options, { direction, offset });
        tip.update();
        const b = box(tip.getElement());
        return placed.some((p) => overlaps(p, b)) ? null : b;
      };
      let chosen = null;
      for (const side of PIN_SIDES) if (!chosen) chosen = free(side, OFFSETS[side]);
      // Pins a few pixels apart: stack the label above the others, a row at a time.
      const row = tip.getElement().offsetHeight + LABEL_GAP;
      for (let k = 1; !chosen && k <= markers.length; k++) chosen = free("top", [0, OFFSETS.top[1] - k * row]);
      placed.push(chosen || box(tip.getElement()));
    }
  }

  resize() {
    this.map.invalidateSize();
  }
}

const OFFSETS = { top: [0, -12], bottom: [0, 12], right: [12, 0], left: [-12, 0] };

// A tooltip's box in layer pixels (the same during a zoom animation as after it).
function box(el) {
  const at = L.DomUtil.getPosition(el);
  return { left: at.x, top: at.y, right: at.x + el.offsetWidth, bottom: at.y + el.offsetHeight };
}

function overlaps(a, b) {
  return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
}
