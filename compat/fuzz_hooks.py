"""schemathesis hooks for fuzz_api.py: generated bodies name the model this server serves
(`TM_FUZZ_MODEL`), so that valid requests reach the engine instead of a 404 for a random
model name. Only a string `model` is replaced: a wrong type stays wrong, so negative cases
stay negative."""

import os

import schemathesis

MODEL = os.environ.get("TM_FUZZ_MODEL", "gemma-3-270m")


@schemathesis.hook
def map_body(context, body):
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        body = dict(body, model=MODEL)
    return body
