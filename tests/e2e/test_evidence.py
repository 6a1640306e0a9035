"""A recording after an SOS, made by the victim app's evidence module in a real Chromium
(a fake microphone), queued while offline and uploaded once back, on a real server.

The module is driven from the signed-in app page: it is imported there as the app will
import it, so it runs under the page's content security policy and with her session.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .conftest import Server
from .test_apps import FAKE_MICROPHONE, chromium, hold, onboard, open_app, seed, sign_in

pw = pytest.importorskip("playwright.sync_api")

IMPORT = "const ev = await import('/static/js/evidence.js');"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium with a fake microphone that needs no one to allow it."""
    yield from chromium(*FAKE_MICROPHONE)


def test_a_recording_is_queued_offline_uploaded_when_back_and_heard_by_staff_unchanged(
    server: Server, browser: Any
) -> None:
    case = seed(server)
    ctx, page = open_app(browser, server)
    sign_in(page, "victim1")
    onboard(page)
    hold(page, "#sos", 2300)
    pw.expect(page.locator("body")).to_have_attribute("data-sos", "sent", timeout=10000)
    staff, api = case["staff"], case["api"]
    incidents = httpx.get(f"{api}/incidents", params={"status": "open"}, headers=staff).json()
    [sos] = [i["id"] for i in incidents if i["kind"] == "sos"]

    # nothing is recorded unless she turned it on
    refused = page.evaluate(
        f"""async () => {{ {IMPORT}
        ev.setEvidenceConsent(false);
        try {{ await ev.startRecording({{ seconds: 2 }}); return null; }}
        catch (e) {{ return String(e.message); }} }}"""
    )
    assert refused is not None and "off" in refused

    # 2 s of the fake microphone, its SHA-256 as the browser computes it
    made = page.evaluate(
        f"""async () => {{ {IMPORT}
        ev.setEvidenceConsent(true);
        const h = await ev.startRecording({{ seconds: 2 }});
        const blob = await h.blob;
        const digest = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
        window.__rec = {{ blob, recordedAt: h.recordedAt }};
        const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0"));
        return {{ sha256: hex.join(""), type: blob.type, size: blob.size, mime: h.mimeType }};
        }}"""
    )
    assert made["type"] == "audio/webm" and made["size"] > 1000, made

    # offline: queued, and a flush keeps it
    ctx.set_offline(True)
    kept = page.evaluate(
        f"""async () => {{ {IMPORT}
        await ev.queueEvidence({sos}, window.__rec.blob, window.__rec.recordedAt);
        const out = await ev.flushEvidence(undefined, {{ backoffMs: 10 }});
        return {{ out, queued: (await ev.queuedEvidence()).length }};
        }}"""
    )
    assert kept == {"out": {"sent": [], "dropped": [], "kept": 1}, "queued": 1}
    assert (
        httpx.get(
            f"{api}/incidents/{sos}/evidence",
            params={"purpose": "incident_response"},
            headers=staff,
        ).json()["evidence"]
        == []
    )

    # back online: uploaded once, and gone from the phone
    ctx.set_offline(False)
    sent = page.evaluate(
        f"""async () => {{ {IMPORT}
        const out = await ev.flushEvidence(undefined, {{ backoffMs: 10 }});
        return {{ out, queued: (await ev.queuedEvidence()).length }};
        }}"""
    )
    assert sent["queued"] == 0 and sent["out"]["kept"] == 0, sent
    [uploaded] = sent["out"]["sent"]
    assert uploaded["sha256"] == made["sha256"] and uploaded["content_type"] == "audio/webm"

    # the control centre: listed with the same digest, and the same bytes
    listed = httpx.get(
        f"{api}/incidents/{sos}/evidence",
        params={"purpose": "incident_response"},
        headers=staff,
    ).json()["evidence"]
    assert [(e["id"], e["sha256"]) for e in listed] == [(uploaded["id"], made["sha256"])]
    r = httpx.get(
        f"{api}/evidence/{uploaded['id']}",
        params={"purpose": "incident_response"},
        headers=staff,
    )
    assert r.status_code == 200 and r.headers["content-type"] == "audio/webm"
    assert hashlib.sha256(r.content).hexdigest() == made["sha256"]
    timeline = httpx.get(f"{api}/incidents/{sos}", headers=staff).json()["timeline"]
    assert [e["data"]["sha256"] for e in timeline if e["action"] == "evidence"] == [made["sha256"]]

    # a refusal for good is dropped, not retried forever; quick exit wipes the queue
    left = page.evaluate(
        f"""async () => {{ {IMPORT}
        const text = new Blob(["not a recording"], {{ type: "audio/webm" }});
        await ev.queueEvidence({sos}, text, null);
        const out = await ev.flushEvidence(undefined, {{ backoffMs: 10 }});
        await ev.queueEvidence({sos}, window.__rec.blob, null);
        const rec = await ev.startRecording({{ seconds: 30 }});
        await ev.clearEvidence();
        const stopped = await rec.blob.then(() => "kept", () => "discarded");
        return {{ out, stopped, queued: (await ev.queuedEvidence()).length }};
        }}"""
    )
    assert left["out"]["dropped"] == [
        {
            "incidentId": sos,
            "status": 415,
            "detail": "a recording must be WebM or Ogg with Opus, or MP4 with AAC",
        }
    ]
    assert left["stopped"] == "discarded" and left["queued"] == 0
    # Chromium logs each failed request (offline, and the one refused for good): those
    # are the module's expected failures; any other error is not
    errors = page.errors  # type: ignore[attr-defined]
    assert [e for e in errors if "Failed to load resource" not in e] == [], errors
    assert len(errors) == 4, errors  # 3 tries offline, then the refused one
    ctx.close()
