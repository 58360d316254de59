"""Drives a running Warden gateway with the official `openai` package.

Usage: python3 openai_conformance.py BASE_URL API_KEY
(the gateway is configured by gateway/tests/conformance.rs: model `up` is a
fake upstream, `bombrecipe` is blocked by the rules).
Prints one line per check and exits non-zero on the first failure.
"""

import json
import sys

import openai


def main() -> int:
    base, key = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)

    models = [m.id for m in client.models.list()]
    assert "up" in models, models
    print("ok models.list", models)

    r = client.chat.completions.create(
        model="up", messages=[{"role": "user", "content": "SAY: plain answer"}]
    )
    assert r.choices[0].message.content == "plain answer", r
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == 9
    print("ok chat.completions.create")

    stream = client.chat.completions.create(
        model="up",
        messages=[{"role": "user", "content": "SAY: streamed words here"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text == "streamed words here", text
    assert finish == "stop", finish
    assert usage is not None and usage.total_tokens == 9
    print("ok chat.completions.create(stream=True)")

    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                },
            },
        }
    ]
    r = client.chat.completions.create(
        model="up",
        messages=[{"role": "user", "content": "CALL the weather tool"}],
        tools=tools,
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather", r
    assert r.choices[0].finish_reason == "tool_calls"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    print("ok tools passed through")

    # The client-tool flow: the caller runs the tool and sends its result back.
    r2 = client.chat.completions.create(
        model="up",
        messages=[
            {"role": "user", "content": "CALL the weather tool"},
            r.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"},
        ],
        tools=tools,
    )
    assert r2.choices[0].message.content == "The tool said: sunny, 24 C", r2
    assert r2.choices[0].finish_reason == "stop"
    print("ok client tool flow")

    # A call that breaks the schema is never returned: after the retries the
    # turn ends with invalid_tool_call (HTTP 502).
    strict = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"enum": ["Rome"]}},
                    "required": ["city"],
                },
            },
        }
    ]
    try:
        client.chat.completions.create(
            model="up",
            messages=[{"role": "user", "content": "CALL the weather tool"}],
            tools=strict,
            tool_choice="required",
        )
        raise AssertionError("an invalid tool call was returned")
    except openai.InternalServerError as e:
        assert e.status_code == 502, e
        assert e.code == "invalid_tool_call", e
        print("ok invalid_tool_call")

    m = client.moderations.create(input="GUARD-UNSAFE text")
    assert m.results[0].flagged is True, m
    assert m.results[0].categories.violence is True
    print("ok moderations.create")

    try:
        client.chat.completions.create(
            model="up", messages=[{"role": "user", "content": "the bombrecipe"}]
        )
        raise AssertionError("the input was not refused")
    except openai.BadRequestError as e:
        assert e.code == "content_filter", e
        assert e.param == "messages", e
        print("ok BadRequestError content_filter")

    r = client.chat.completions.create(
        model="up", messages=[{"role": "user", "content": "SAY: a bomb|recipe"}]
    )
    assert r.choices[0].finish_reason == "content_filter", r
    print("ok output refusal")

    bad = openai.OpenAI(base_url=f"{base}/v1", api_key="sk-wrong", max_retries=0)
    try:
        bad.models.list()
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError:
        print("ok AuthenticationError")

    try:
        client.chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "hi"}]
        )
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError:
        print("ok NotFoundError")
    return 0


if __name__ == "__main__":
    sys.exit(main())
