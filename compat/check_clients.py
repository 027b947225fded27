"""Drives a real `tensormesh serve` with the OpenAI Python SDK, the official
`tensormesh==0.2.1` SDK and its `tm infer` CLI, unchanged, over every inference route.

Usage: python check_clients.py PATH/TO/tensormesh [MODEL] [--models-dir DIR]
Prints one line per check and "N passed, N failed"; exits non-zero on any failure.
"""

import json
import os
import subprocess
import sys
import tempfile
import traceback

import openai
import tensormesh

KEY = "tm-compat-key"
results = []


def check(name):
    def wrap(fn):
        try:
            fn()
            results.append((name, None))
            print(f"ok    {name}")
        except Exception:  # noqa: BLE001 - report every failure, keep going
            results.append((name, traceback.format_exc()))
            print(f"FAIL  {name}\n{traceback.format_exc()}")
        return fn
    return wrap


def start_server(binary, model, models_dir):
    args = [binary, "serve", "--inference-addr", "127.0.0.1:0", "--model", model,
            "--ctx-size", "1024", "--parallel", "2"]
    if models_dir:
        args += ["--models-dir", models_dir]
    env = dict(os.environ, TENSORMESH_API_KEYS=KEY)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    for line in proc.stdout:
        if line.startswith("inference: "):
            return proc, line.split(" ", 1)[1].strip()
    raise SystemExit(f"server exited with {proc.wait()} before printing its address")


def main():
    binary = sys.argv[1]
    model = sys.argv[2] if len(sys.argv) > 2 and not sys.argv[2].startswith("--") else "gemma-3-270m"
    models_dir = sys.argv[sys.argv.index("--models-dir") + 1] if "--models-dir" in sys.argv else None
    proc, base = start_server(binary, model, models_dir)
    try:
        run_checks(base, model)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    failed = sum(1 for _, err in results if err)
    print(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def run_checks(base, model):
    oai = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY)
    tm = tensormesh.Tensormesh(inference_api_key=KEY, serverless_base_url=base)
    inf = tm.inference.serverless
    messages = [{"role": "user", "content": "Say hello."}]

    @check("openai: chat.completions.create")
    def _():
        r = oai.chat.completions.create(model=model, messages=messages, max_tokens=8)
        assert r.choices[0].message.role == "assistant"
        assert r.usage.prompt_tokens > 0 and r.usage.total_tokens >= r.usage.prompt_tokens
        assert r.usage.prompt_tokens_details.cached_tokens >= 0

    @check("openai: chat stream with include_usage")
    def _():
        stream = oai.chat.completions.create(model=model, messages=messages, max_tokens=8, stream=True,
                                             stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text, chunks
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    @check("openai: completions.create")
    def _():
        r = oai.completions.create(model=model, prompt="Once upon a time", max_tokens=8)
        assert r.choices[0].text and r.choices[0].finish_reason in ("stop", "length")

    @check("openai: responses.create")
    def _():
        r = oai.responses.create(model=model, input="Say hello.", max_output_tokens=8)
        assert r.output_text, r

    @check("openai: responses stream")
    def _():
        events = list(oai.responses.create(model=model, input="Say hello.", max_output_tokens=8, stream=True))
        kinds = [e.type for e in events]
        assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete"), kinds

    @check("openai: models.list")
    def _():
        assert [m.id for m in oai.models.list()] == [model]

    @check("openai: errors map to typed exceptions")
    def _():
        try:
            oai.chat.completions.create(model="no-such-model", messages=messages)
            raise AssertionError("expected NotFoundError")
        except openai.NotFoundError:
            pass
        try:
            openai.OpenAI(base_url=f"{base}/v1", api_key="wrong").chat.completions.create(model=model, messages=messages)
            raise AssertionError("expected AuthenticationError")
        except openai.AuthenticationError:
            pass

    @check("tensormesh: chat.completions.create")
    def _():
        r = inf.chat.completions.create(model=model, messages=messages, max_tokens=8)
        assert r.choices[0].message.role == "assistant" and r.id and r.model == model

    @check("tensormesh: chat stream with usage")
    def _():
        chunks = list(inf.chat.completions.create(model=model, messages=messages, max_tokens=8, stream=True,
                                                  stream_options={"include_usage": True}))
        assert any(c.choices and c.choices[0].delta.content for c in chunks), chunks
        assert chunks[-1].usage is not None

    @check("tensormesh: completions.create (+ stream)")
    def _():
        r = inf.completions.create(model=model, prompt="Once upon a time", max_tokens=8)
        assert r.choices[0].text
        raw = inf.completions.create(model=model, prompt="Once upon a time", max_tokens=8, stream=True)
        lines = [l for l in raw.iter_lines(decode_unicode=True) if l]
        assert lines[-1] == "data: [DONE]", lines

    @check("tensormesh: responses.create")
    def _():
        r = inf.responses.create(model=model, input="Say hello.", max_output_tokens=8)
        assert r.id and r.output

    @check("tensormesh: tokenize / detokenize")
    def _():
        t = inf.tokenize.create(model=model, prompt="Hello world")
        assert t.tokens and t.count == len(t.tokens) and t.max_model_len == 1024
        d = inf.detokenize.create(model=model, tokens=t.tokens)
        assert d.prompt == "Hello world", d.prompt
        m = inf.tokenize.create(model=model, messages=messages)
        assert m.count > t.count

    @check("tensormesh: models / health / version")
    def _():
        assert [m.id for m in inf.models.list().data] == [model]
        assert inf.health.get().status == "ok"
        assert inf.version.get().version

    @check("tensormesh: errors map to typed exceptions with request id")
    def _():
        try:
            inf.chat.completions.create(model=model, messages=messages, temperature=9.0)
            raise AssertionError("expected BadRequestError")
        except tensormesh.BadRequestError as e:
            assert e.status_code == 400 and e.request_id, e
            assert "temperature" in json.dumps(e.body)


    tm_bin = os.path.join(os.path.dirname(sys.executable), "tm")
    # An empty state dir, so no personal config.toml or auth.json is read.
    cli_env = dict(os.environ, TM_CONFIG_HOME=tempfile.mkdtemp(prefix="tm-compat-"))

    def tm_cli(*args, stdin=None):
        out = subprocess.run([tm_bin, "infer", *args, "--base-url", base, "--api-key", KEY],
                             input=stdin, capture_output=True, text=True, env=cli_env, timeout=120)
        assert out.returncode == 0, (args, out.returncode, out.stdout, out.stderr)
        return out.stdout

    @check("tm infer chat (+ --stream)")
    def _():
        body = json.dumps({"messages": messages, "max_tokens": 8})
        assert tm_cli("chat", "--model", model, "--json", body).strip()
        assert tm_cli("chat", "--model", model, "--stream", stdin=body).strip()

    @check("tm infer completions / tokenize / health / version / models")
    def _():
        body = json.dumps({"prompt": "Once upon a time", "max_tokens": 8})
        assert tm_cli("completions", "--model", model, "--json", body).strip()
        assert tm_cli("health").strip() == "ok"
        assert tm_cli("version").strip()
        assert model in tm_cli("models")


if __name__ == "__main__":
    main()
