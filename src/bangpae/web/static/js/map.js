// A small Leaflet map: his position with an accuracy circle and heading, hers, a target.
import * as L from "/static/leaflet/leaflet-src.esm.js";

export class MapView {
  constructor(el, tileUrl, attribution) {
    this.el = el;
    this.map = L.map(el, { zoomControl: true, attributionControl: Boolean(tileUrl) });
    if (tileUrl) {
      L.tileLayer(tileUrl, { maxZoom: 19, attribution }).addTo(this.map);
    }
    this.layers = L.layerGroup().addTo(this.map);
    this.map.setView([37.5665, 126.978], 15);
  }

  // Redraw: items are {kind: "him"|"lastSeen"|"me"|"target", lat, lon, accuracy_m, heading_deg, label}
  draw(items) {
    this.layers.clearLayers();
    const bounds = [];
    for (const it of items) {
      const at = [it.lat, it.lon];
      bounds.push(at);
      if (it.accuracy_m) {
        L.circle(at, { radius: it.accuracy_m, className: `acc acc-${it.kind}`, weight: 1 }).addTo(
          this.layers,
        );
      }
      const icon = L.divIcon({ className: `pin pin-${it.kind}`, iconSize: [22, 22] });
      const marker = L.marker(at, { icon, title: it.label, alt: it.label, keyboard: false });
      marker.addTo(this.layers);
      const el = marker.getElement();
      if (el && it.heading_deg != null && it.kind === "him") {
        el.classList.add("has-heading");
        el.style.setProperty("--heading", `${it.heading_deg}deg`);
      }
      if (it.label) marker.bindTooltip(it.label, { permanent: true, direction: "top", offset: [0, -12] });
    }
    if (bounds.length === 1) this.map.setView(bounds[0], 16);
    else if (bounds.length > 1) this.map.fitBounds(bounds, { padding: [40, 40], maxZoom: 17 });
  }

  resize() {
    this.map.invalidateSize();
  }
}
