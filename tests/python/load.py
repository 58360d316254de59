"""Steady, bounded open-loop load on a Warden gateway, from a process of its own.

Sends chat turns at a fixed rate (whether or not earlier ones have answered,
as real clients do) for a fixed time, and writes one JSON line per request:
when it was sent and answered (seconds since the start), the status or the
transport error, the request id and the parts of the body the fault tests
judge (the error's shape, the decision and the verdicts).

Usage: load.py BASE_URL KEY MODEL RATE SECONDS OUT [--stream]
"""

import asyncio
import json
import sys
import time

import httpx

# What each turn asks, in rotation: allowed, flagged (rules: "lawyer"),
# blocked at the input (rules: "bombrecipe").
PROMPTS = ["SAY: steady answer {i}", "ask a lawyer {i}", "bombrecipe {i}"]
TIMEOUT = 15.0


def summarise(status, headers, body):
    """The fields a fault test needs, from one response."""
    row = {"status": status, "request_id": headers.get("x-request-id")}
    if status >= 400:
        row["retry_after"] = headers.get("retry-after")
    try:
        doc = json.loads(body)
    except ValueError:
        row["body_not_json"] = body[:200]
        return row
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        row["error"] = {
            "message": err.get("message"),
            "type": err.get("type"),
            "code": err.get("code"),
        }
    warden = doc.get("warden") if isinstance(doc, dict) else None
    if isinstance(warden, dict):
        row["decision"] = warden.get("decision")
        row["policy_version"] = (warden.get("policy") or {}).get("version")
        row["verdicts"] = [
            [v.get("checkpoint"), v.get("backend"), v.get("verdict")]
            for v in warden.get("verdicts", [])
        ]
    choices = doc.get("choices") if isinstance(doc, dict) else None
    if choices:
        row["finish_reason"] = choices[0].get("finish_reason")
    return row


async def one(client, base, key, model, i, start, out):
    sent = time.monotonic() - start
    body = {
        "model": model,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": PROMPTS[i % 3].format(i=i)}],
    }
    try:
        res = await client.post(
            f"{base}/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {key}"},
        )
        row = summarise(res.status_code, res.headers, res.text)
    except httpx.HTTPError as e:
        row = {"status": None, "transport_error": type(e).__name__}
    row.update({"i": i, "sent": round(sent, 4), "done": round(time.monotonic() - start, 4)})
    out.write(json.dumps(row) + "\n")
    out.flush()


async def main():
    base, key, model, rate, seconds, path = sys.argv[1:7]
    rate, seconds = float(rate), float(seconds)
    total = int(rate * seconds)
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=TIMEOUT, limits=limits) as client:
        with open(path, "w") as out:
            start = time.monotonic()
            # The test lines its fault timeline up with this.
            out.write(json.dumps({"start_epoch": time.time()}) + "\n")
            tasks = []
            for i in range(total):
                # Open loop: turn i leaves at i / rate whatever came back.
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(client, base, key, model, i, start, out)))
            await asyncio.gather(*tasks)


asyncio.run(main())
