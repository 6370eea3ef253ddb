"""WeChat subscribe and template messages as a zhongtai channel (entry point ``zhongtai.channels: wechat``).

Install it (``pip install ./plugins/zhongtai-wechat``), configure ``plugins.wechat`` (:class:`WeChatConfig`),
give persons an ``openid`` in the contact directory, and send rules' actions to channel ``wechat``;
``zhongtai worker --channel wechat`` delivers them exactly once per action id like every channel
(docs/plugins.md).

The HTTP API it speaks (WeChat Official Accounts / Mini Programs):

* ``GET {api_base}/cgi-bin/token?grant_type=client_credential&appid=&secret=`` →
  ``{"access_token", "expires_in"}``: fetched on first use and again ``refresh_margin_s`` before it expires, or
  when WeChat says the token is invalid or expired (40001, 40014, 42001: fetched again and the send retried once);
* ``POST {api_base}/cgi-bin/message/subscribe/send?access_token=`` (``kind: subscribe``) or
  ``.../message/template/send?access_token=`` (``kind: template``, which also carries ``client_msg_id`` = the
  action id, WeChat's own duplicate guard) with ``{"touser": openid, "template_id", "page"|"url", "data":
  {field: {"value"}}}`` → ``{"errcode": 0, "msgid"}``.

``errcode`` → delivery result: 0 delivered; -1 (busy), 45009 / 45011 (quota) and HTTP 5xx / timeouts transient
(retried with backoff; the quota ones after ``quota_retry_after_s``); 43101 (the user has not subscribed or
refused) suppressed; every other code (40003 bad openid, 40037 bad template id, 47003 bad data, 40013 / 40125 /
40164 bad appid / secret / IP not allowed, ...) permanent: the action goes to the channel's dead-letter topic
with the code and WeChat's message.
"""

from __future__ import annotations

import string
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.channels.base import Contact, DeliveryResult
from operators.messages import Action

#: The access token is invalid or expired: fetch a new one and send again (once).
TOKEN_EXPIRED = frozenset({40001, 40014, 42001})
#: Worth retrying later.
TRANSIENT = frozenset({-1})
QUOTA = frozenset({45009, 45011})
#: The person has not subscribed to (or refused) the message: not sent on purpose.
NOT_SUBSCRIBED = frozenset({43101})


class WeChatTemplate(BaseModel):
    """How one zhongtai template (an action's ``template``) is sent: WeChat's template id and its fields, each a
    ``string.Template`` over the action's params (plus ``$person_id``, ``$campaign``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["subscribe", "template"] = "subscribe"
    template_id: str = Field(min_length=1)
    #: subscribe: the mini-program page opened from the message.
    page: str | None = None
    #: template: the URL opened from the message.
    url: str | None = None
    data: dict[str, str] = {}


class WeChatConfig(BaseModel):
    """``plugins.wechat``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_base: str = "https://api.weixin.qq.com"
    appid: str = Field(min_length=1)
    secret: SecretStr
    timeout_s: float = Field(10.0, gt=0)
    #: Fetch a new access token this long before the current one expires.
    refresh_margin_s: int = Field(300, ge=0)
    #: ``Retry-After`` of a quota error (45009, 45011).
    quota_retry_after_s: float = Field(60.0, gt=0)
    templates: dict[str, WeChatTemplate] = {}


class WeChatChannel:
    """The ``wechat`` channel adapter (connectors.channels.base.ChannelAdapter). One per worker process."""

    channel = "wechat"
    config_model = WeChatConfig

    def __init__(self, config: WeChatConfig, templates: Mapping[str, Mapping[str, str]] | None = None,
                 clock: Callable[[], float] = time.time, transport: httpx.BaseTransport | None = None) -> None:
        if urlsplit(config.api_base).scheme not in ("http", "https"):
            raise ValueError(f"plugins.wechat.api_base {config.api_base!r} must be an http(s) URL")
        self.cfg, self.clock = config, clock
        self.client = httpx.Client(base_url=config.api_base, timeout=config.timeout_s, transport=transport,
                                   headers={"User-Agent": "zhongtai-wechat"})
        self._token: str | None = None
        self._expires_at = 0.0
        #: Access tokens fetched so far (the tests read it; a metric could).
        self.token_fetches = 0

    def address(self, contact: Contact) -> str | None:
        return contact.openid

    def destination(self, action: Action, contact: Contact) -> str:
        return f"wechat:{urlsplit(self.cfg.api_base).netloc}"

    # ---- the access token -----------------------------------------------------------------------
    def _access_token(self, *, fresh: bool = False) -> str | DeliveryResult:
        if not fresh and self._token is not None and self.clock() < self._expires_at:
            return self._token
        params = {"grant_type": "client_credential", "appid": self.cfg.appid,
                  "secret": self.cfg.secret.get_secret_value()}
        try:
            r = self.client.get("/cgi-bin/token", params=params)
        except httpx.HTTPError as e:
            return DeliveryResult.transient(f"wechat token: {type(e).__name__}: {e}")
        body = _json(r)
        if r.status_code >= 500 or body is None:
            return DeliveryResult.transient(f"wechat token: HTTP {r.status_code}")
        if not body.get("access_token"):
            return self._classify("wechat token", body)
        self.token_fetches += 1
        self._token = str(body["access_token"])
        ttl = float(body.get("expires_in") or 7200)
        self._expires_at = self.clock() + max(0.0, ttl - self.cfg.refresh_margin_s)
        return self._token

    # ---- sending --------------------------------------------------------------------------------
    def _message(self, action: Action, openid: str, tpl: WeChatTemplate) -> tuple[str, dict[str, Any]]:
        values = {k: str(v) for k, v in action.params.items()}
        values.setdefault("person_id", action.person_id)
        values.setdefault("campaign", action.campaign or "")
        data = {k: {"value": string.Template(v).safe_substitute(values)} for k, v in tpl.data.items()}
        body: dict[str, Any] = {"touser": openid, "template_id": tpl.template_id, "data": data}
        if tpl.kind == "subscribe":
            if tpl.page:
                body["page"] = tpl.page
            return "/cgi-bin/message/subscribe/send", body
        if tpl.url:
            body["url"] = tpl.url
        body["client_msg_id"] = action.action_id
        return "/cgi-bin/message/template/send", body

    def deliver(self, action: Action, contact: Contact) -> DeliveryResult:
        openid = self.address(contact)
        if not openid:
            return DeliveryResult.suppressed("no_address")
        tpl = self.cfg.templates.get(action.template)
        if tpl is None:
            return DeliveryResult.permanent(f"wechat: no template {action.template!r} in plugins.wechat.templates")
        path, body = self._message(action, openid, tpl)
        for attempt in (1, 2):
            token = self._access_token(fresh=attempt == 2)
            if isinstance(token, DeliveryResult):
                return token
            try:
                r = self.client.post(path, params={"access_token": token}, json=body)
            except httpx.HTTPError as e:
                return DeliveryResult.transient(f"wechat {path}: {type(e).__name__}: {e}")
            answer = _json(r)
            if r.status_code >= 500 or answer is None:
                return DeliveryResult.transient(f"wechat {path}: HTTP {r.status_code}")
            code = int(answer.get("errcode") or 0)
            if code == 0:
                return DeliveryResult.delivered(str(answer.get("msgid") or action.action_id))
            if code not in TOKEN_EXPIRED:
                return self._classify(f"wechat {path}", answer)
            self._token = None
        return DeliveryResult.transient(f"wechat {path}: the access token was refused twice (errcode {code})")

    def _classify(self, what: str, answer: Mapping[str, Any]) -> DeliveryResult:
        code = int(answer.get("errcode") or 0)
        reason = f"{what}: errcode {code} {answer.get('errmsg', '')}".strip()
        if code in TRANSIENT or code in TOKEN_EXPIRED:
            return DeliveryResult.transient(reason)
        if code in QUOTA:
            return DeliveryResult.transient(reason, self.cfg.quota_retry_after_s)
        if code in NOT_SUBSCRIBED:
            return DeliveryResult.suppressed("not_subscribed")
        return DeliveryResult.permanent(reason)

    def close(self) -> None:
        self.client.close()


def _json(r: httpx.Response) -> dict[str, Any] | None:
    try:
        body = r.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
