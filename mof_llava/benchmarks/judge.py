"""An optional LLM judge behind an OpenAI-compatible chat-completions endpoint.

Off unless a URL is given. Plain HTTP through `urllib` (no client library): POST
`{url}/chat/completions` with `{"model", "messages", "temperature"}` and read
`choices[0].message.content`. The API key, if the endpoint needs one, comes from an environment
variable (never from the command line, so it stays out of shell history and metrics files).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass


class JudgeError(RuntimeError):
    pass


@dataclass(frozen=True)
class JudgeConfig:
    url: str  # base URL, e.g. http://localhost:8000/v1
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    timeout_s: float = 60.0
    attempts: int = 3  # per request, for network/server errors

    def describe(self) -> dict[str, object]:
        """What the metrics record about the judge (no key)."""
        return {"url": self.url, "model": self.model, "temperature": self.temperature}


class ChatJudge:
    def __init__(self, config: JudgeConfig):
        self.config = config
        self.calls = 0

    def ask(self, user: str, system: str | None = None) -> str:
        """The judge's reply to one user message (with an optional system message)."""
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}
        ]
        body = json.dumps(
            {"model": self.config.model, "messages": messages, "temperature": self.config.temperature}
        ).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.config.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = self.config.url.rstrip("/") + "/chat/completions"
        last_error: Exception | None = None
        for attempt in range(self.config.attempts):
            if attempt:
                time.sleep(min(2.0**attempt, 30.0))
            try:
                request = urllib.request.Request(url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                self.calls += 1
                return str(payload["choices"][0]["message"]["content"])
            except urllib.error.HTTPError as err:
                last_error = err
                if 400 <= err.code < 500 and err.code != 429:
                    break  # a bad request does not get better by retrying
            except (
                urllib.error.URLError,
                TimeoutError,
                ConnectionError,
                json.JSONDecodeError,
                KeyError,
                IndexError,
            ) as err:
                last_error = err
        raise JudgeError(f"judge at {url} failed after {attempt + 1} attempt(s): {last_error}")
