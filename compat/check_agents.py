"""What agent frameworks and structured-output apps send, through the OpenAI Python SDK,
unchanged: tool calls (forced, required, auto, none, streamed, a two-step agent loop),
structured outputs (`.parse()` with a Pydantic model, `json_schema` samples at
temperature 1), log-probabilities, `n` > 1, the Responses API's function calls, and
bad input answered with a 400 naming the field.

Usage:
  python check_agents.py --tensormesh PATH/TO/tensormesh [--model NAME] [--models-dir DIR]
  python check_agents.py --base URL --key KEY --model NAME
  python check_agents.py --tensormesh PATH --versus-llama-server PATH/TO/llama-server [--gguf FILE]

The first starts our server with the model (default qwen2.5-coder-0.5b-instruct) and
checks it; the second checks any OpenAI-compatible server; the third checks ours and
llama-server (`--jinja`, same GGUF, same threads) and prints both scores in one table.
Exits non-zero when a check fails against our server.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

import openai
import pydantic

KEY = "tm-compat-agents-key-0123456789"
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Get the current time in a time zone",
                                      "parameters": {"type": "object", "properties": {"tz": {"type": "string"}},
                                                     "required": ["tz"]}}},
]
SYSTEM = "Call a tool when you need data; once you have its result, answer the user in one plain sentence."


class Person(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    name: str
    age: int
    languages: list[str]


def valid_weather_args(arguments):
    args = json.loads(arguments)
    assert set(args) == {"city", "unit"}, args
    assert isinstance(args["city"], str) and args["unit"] in ("celsius", "fahrenheit"), args
    return args


def checks(client, model):
    """(name, function) pairs; each function raises on failure."""
    ask = [{"role": "user", "content": "What is the weather like in Paris today?"}]

    def chat(**kw):
        return client.chat.completions.create(model=model, temperature=0, max_tokens=80, **kw)

    def forced():
        r = chat(messages=ask, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}})
        call = r.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather" and r.choices[0].finish_reason == "tool_calls", r
        valid_weather_args(call.function.arguments)

    def required():
        r = chat(messages=ask, tools=TOOLS, tool_choice="required")
        calls = r.choices[0].message.tool_calls
        assert calls and all(c.function.name in ("get_weather", "get_time") for c in calls), r
        assert r.choices[0].message.content in (None, ""), r
        json.loads(calls[0].function.arguments)

    def auto():
        r = chat(messages=ask, tools=TOOLS)
        calls = r.choices[0].message.tool_calls
        assert calls and calls[0].function.name == "get_weather", r
        valid_weather_args(calls[0].function.arguments)

    def none():
        r = chat(messages=ask, tools=TOOLS, tool_choice="none")
        m = r.choices[0].message
        assert not m.tool_calls and m.content and "<tool_call>" not in m.content, r

    def streamed():
        calls = {}
        finish = None
        for chunk in chat(messages=ask, tools=TOOLS, tool_choice="required", stream=True):
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            for tc in delta.tool_calls or []:
                if tc.index not in calls:
                    assert tc.id and tc.function.name, tc
                    calls[tc.index] = {"name": tc.function.name, "arguments": ""}
                calls[tc.index]["arguments"] += tc.function.arguments or ""
            finish = chunk.choices[0].finish_reason or finish
        assert calls and finish == "tool_calls", (calls, finish)
        assert calls[0]["name"] == "get_weather", calls
        valid_weather_args(calls[0]["arguments"])

    def agent_loop():
        messages = [{"role": "system", "content": SYSTEM}] + ask
        first = chat(messages=messages, tools=TOOLS)
        call = first.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather", first
        messages.append(first.choices[0].message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 22, "sky": "sunny"})})
        answer = chat(messages=messages, tools=TOOLS, tool_choice="none")
        text = answer.choices[0].message.content
        assert text and "22" in text, answer

    def parse_pydantic():
        parse = getattr(client.chat.completions, "parse", None) or client.beta.chat.completions.parse
        r = parse(model=model, messages=[{"role": "user", "content": "Invent a programmer."}],
                  response_format=Person, temperature=0, max_tokens=120)
        person = r.choices[0].message.parsed
        assert isinstance(person, Person), r

    def json_schema_samples():
        schema = Person.model_json_schema()
        for seed in range(5):
            r = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Invent a programmer as JSON."}],
                response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
                temperature=1.0, seed=seed, max_tokens=120)
            Person.model_validate_json(r.choices[0].message.content)
        assert schema["additionalProperties"] is False

    def logprobs():
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Name a color."}],
                                           temperature=0, max_tokens=5, logprobs=True, top_logprobs=3)
        content = r.choices[0].logprobs.content
        assert len(content) == r.usage.completion_tokens, r
        for e in content:
            tops = [t.logprob for t in e.top_logprobs]
            assert len(tops) == 3 and tops == sorted(tops, reverse=True) and e.token == e.top_logprobs[0].token, e

    def completion_logprobs():
        r = client.completions.create(model=model, prompt="The capital of France is", max_tokens=3, temperature=0,
                                      logprobs=2, echo=True)
        lp = r.choices[0].logprobs
        assert lp.token_logprobs[0] is None and len(lp.tokens) == r.usage.prompt_tokens + r.usage.completion_tokens, r
        assert r.choices[0].text.startswith("The capital of France is"), r

    def n_choices():
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say a word."}], n=3,
                                           temperature=1.0, max_tokens=8)
        assert [c.index for c in r.choices] == [0, 1, 2], r
        assert r.usage.completion_tokens >= 3, r

    def n_streamed():
        finished = set()
        for chunk in client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], n=2,
                                                    max_tokens=5, stream=True):
            for c in chunk.choices:
                if c.finish_reason:
                    finished.add(c.index)
        assert finished == {0, 1}, finished

    responses_tools = [{"type": "function", "name": "get_weather", "description": "Get the current weather in a city",
                        "parameters": WEATHER}]

    def responses_function_call():
        r = client.responses.create(model=model, input="What is the weather like in Paris?", tools=responses_tools,
                                    tool_choice="required", temperature=0, max_output_tokens=60)
        call = next(i for i in r.output if i.type == "function_call")
        valid_weather_args(call.arguments)
        follow = client.responses.create(
            model=model, tools=responses_tools, tool_choice="none", temperature=0, max_output_tokens=40,
            input=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is the weather like in Paris?"},
                   {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
                   {"type": "function_call_output", "call_id": call.call_id,
                    "output": json.dumps({"temperature": 22, "sky": "sunny"})}])
        assert "22" in follow.output_text, follow

    def responses_stream():
        kinds = []
        args = ""
        with client.responses.stream(model=model, input="What is the weather like in Paris?", tools=responses_tools,
                                     tool_choice="required", temperature=0, max_output_tokens=60) as stream:
            for event in stream:
                kinds.append(event.type)
                if event.type == "response.function_call_arguments.delta":
                    args += event.delta
        assert "response.function_call_arguments.done" in kinds and kinds[-1] == "response.completed", kinds
        valid_weather_args(args)

    def responses_parse():
        r = client.responses.parse(model=model, input="Invent a programmer.", text_format=Person, temperature=0,
                                   max_output_tokens=120)
        assert isinstance(r.output_parsed, Person), r

    def bad_input():
        for kwargs, param in [
            ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "nope"}}]}, "tools[0].function.parameters"),
            ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "undeclared"}}}, "tool_choice"),
            ({"n": 1000}, "n"),
            ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ]:
            try:
                client.chat.completions.create(model=model, messages=ask, max_tokens=4, **kwargs)
            except openai.BadRequestError as e:
                assert e.status_code == 400 and (e.body or {}).get("param") == param, (param, e.body)
            else:
                raise AssertionError(f"{param}: accepted")

    return [
        ("tools: a named function is called", forced),
        ("tools: required", required),
        ("tools: auto calls for a question that needs one", auto),
        ("tools: none answers in text", none),
        ("tools: streamed calls reassembled", streamed),
        ("tools: two-step agent loop", agent_loop),
        ("structured: chat.completions.parse(Pydantic)", parse_pydantic),
        ("structured: 5 json_schema samples at temperature 1", json_schema_samples),
        ("logprobs: chat top_logprobs", logprobs),
        ("logprobs: completions with echo", completion_logprobs),
        ("n: 3 choices", n_choices),
        ("n: 2 streamed choices", n_streamed),
        ("responses: function call and its output", responses_function_call),
        ("responses: streamed function call events", responses_stream),
        ("responses: parse(text_format=Pydantic)", responses_parse),
        ("bad input: 400 naming the field", bad_input),
    ]


def run_checks(base, key, model, label):
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=120)
    results = []
    for name, fn in checks(client, model):
        try:
            fn()
            results.append((name, None))
            print(f"ok    [{label}] {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            results.append((name, f"{type(e).__name__}: {e}"[:300]))
            print(f"FAIL  [{label}] {name}\n{traceback.format_exc(limit=3)}", flush=True)
    return results


def wait_ready(url, proc, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.5)
    raise SystemExit(f"{url}: not ready after {seconds} s")


def start_tensormesh(binary, model, models_dir, threads):
    data_dir = tempfile.mkdtemp(prefix="tm-agents-")
    args = [binary, "serve", "--inference-addr", "127.0.0.1:0", "--control-addr", "127.0.0.1:0", "--data-dir",
            data_dir, "--model", model, "--ctx-size", "2048", "--parallel", "4", "--threads", str(threads)]
    if models_dir:
        args += ["--models-dir", models_dir]
    env = dict(os.environ, TENSORMESH_ADMIN_API_KEY=KEY, TENSORMESH_ADMIN_PASSWORD="agents-password-1")
    env.pop("TENSORMESH_DATABASE_URL", None)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    for line in proc.stdout:
        if line.startswith("inference: "):
            base = line.split(" ", 1)[1].strip()
            wait_ready(base, proc)
            return proc, base
    raise SystemExit(f"tensormesh exited with {proc.wait()} before printing its address")


def start_llama_server(binary, gguf, threads):
    port = 18000 + os.getpid() % 1000
    base = f"http://127.0.0.1:{port}"
    args = [binary, "-m", gguf, "--jinja", "--host", "127.0.0.1", "--port", str(port), "-c", "8192", "-np", "4",
            "-t", str(threads), "--api-key", KEY]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(base, proc)
    return proc, base


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tensormesh")
    p.add_argument("--base")
    p.add_argument("--key", default=KEY)
    p.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    p.add_argument("--models-dir")
    p.add_argument("--versus-llama-server")
    p.add_argument("--gguf", help="the model file llama-server loads (default: the pulled model)")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    procs = []
    try:
        if a.base:
            ours = run_checks(a.base, a.key, a.model, "server")
        else:
            proc, base = start_tensormesh(a.tensormesh, a.model, a.models_dir, a.threads)
            procs.append(proc)
            ours = run_checks(base, KEY, a.model, "tensormesh")
            proc.terminate()
            proc.wait(timeout=30)
        theirs = None
        if a.versus_llama_server:
            models_dir = a.models_dir or os.path.expanduser("~/.cache/tensormesh/models")
            gguf = a.gguf or os.path.join(models_dir, f"{a.model}.gguf")
            proc, base = start_llama_server(a.versus_llama_server, gguf, a.threads)
            procs.append(proc)
            theirs = run_checks(base, KEY, a.model, "llama-server")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
    report(ours, theirs)


def report(ours, theirs):
    def score(results):
        return f"{sum(1 for _, e in results if e is None)}/{len(results)}"

    if theirs is not None:
        width = max(len(n) for n, _ in ours)
        print(f"\n{'check':<{width}}  tensormesh  llama-server --jinja")
        for (name, mine), (_, other) in zip(ours, theirs):
            print(f"{name:<{width}}  {'ok' if mine is None else 'FAIL':<10}  {'ok' if other is None else 'FAIL'}")
        print(f"{'score':<{width}}  {score(ours):<10}  {score(theirs)}")
    failed = sum(1 for _, e in ours if e)
    print(f"{len(ours) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
