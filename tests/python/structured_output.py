"""`response_format` through the official `openai` package against a gateway
whose model `local` is the bundled model (driven by tests/tests/constrained.rs).

Usage: python3 structured_output.py BASE_URL API_KEY
Prints one line per check and exits non-zero on the first failure.
"""

import json
import sys

import openai

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 20},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "windy": {"type": "boolean"},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}


def valid(value) -> bool:
    """SCHEMA checked by hand, independently of the gateway."""
    if not isinstance(value, dict) or not {"city", "unit", "days"} <= value.keys():
        return False
    if not value.keys() <= {"city", "unit", "days", "windy"}:
        return False
    city, days = value["city"], value["days"]
    return (
        isinstance(city, str)
        and 1 <= len(city) <= 20
        and value["unit"] in ("celsius", "fahrenheit")
        and isinstance(days, int)
        and not isinstance(days, bool)
        and 1 <= days <= 7
        and isinstance(value.get("windy", False), bool)
    )


def main() -> int:
    base, key = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    messages = [
        {"role": "user", "content": "Give me the forecast for Paris as JSON."}
    ]
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "forecast", "schema": SCHEMA, "strict": True},
    }

    for seed in range(8):
        r = client.chat.completions.create(
            model="local",
            messages=messages,
            response_format=fmt,
            temperature=1.0,
            seed=seed,
            max_tokens=64,
        )
        content = r.choices[0].message.content
        value = json.loads(content)
        assert valid(value), (seed, content)
        assert r.choices[0].finish_reason == "stop", r
    print("ok json_schema sampled 8/8 valid")

    # The same streamed: the chunks join into valid JSON.
    stream = client.chat.completions.create(
        model="local",
        messages=messages,
        response_format=fmt,
        temperature=1.0,
        seed=42,
        max_tokens=64,
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert valid(json.loads(text)), text
    print("ok json_schema streamed")

    r = client.chat.completions.create(
        model="local",
        messages=[{"role": "user", "content": "Describe a cat in JSON."}],
        response_format={"type": "json_object"},
        temperature=1.0,
        seed=3,
        max_tokens=64,
    )
    assert isinstance(json.loads(r.choices[0].message.content), dict), r
    print("ok json_object")

    unsupported = {
        "type": "json_schema",
        "json_schema": {
            "name": "tags",
            "schema": {
                "type": "array",
                "items": {"type": "string"},
                "uniqueItems": True,
            },
        },
    }
    try:
        client.chat.completions.create(
            model="local", messages=messages, response_format=unsupported
        )
        raise AssertionError("an unsupported schema was accepted")
    except openai.BadRequestError as e:
        assert e.code == "unsupported_schema_feature", e
        assert e.param == "response_format", e
        assert "uniqueItems" in str(e), e
        print("ok BadRequestError unsupported_schema_feature")

    try:
        client.chat.completions.create(
            model="local",
            messages=messages,
            response_format=fmt,
            max_tokens=4,
        )
        raise AssertionError("an unfinished output was returned")
    except openai.BadRequestError as e:
        assert e.code == "output_unfinished", e
        assert e.param == "max_tokens", e
        print("ok BadRequestError output_unfinished")

    # Upstream models get the format unchanged (the fake upstream echoes it).
    r = client.chat.completions.create(
        model="up",
        messages=[{"role": "user", "content": "ECHOFORMAT"}],
        response_format=unsupported,
    )
    assert json.loads(r.choices[0].message.content) == unsupported, r
    print("ok passed to upstreams unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
