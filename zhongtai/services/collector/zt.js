/* zhongtai browser SDK: served by `zhongtai collect` at /sdk/zt.js (docs/collector.md). Plain ES5, no build.
 *
 *   <script src="https://collect.example.com/sdk/zt.js"></script>
 *   <script>
 *     zt.init({host: "https://collect.example.com", writeKey: "WEB_WRITE_KEY"});
 *     zt.page();                                   // page_view
 *     zt.track("add_to_cart", {item_id: "sku-1", price: 12.5, qty: 1});
 *     zt.identify("u-123", {tier: "gold"});        // userId on this and every later event
 *   </script>
 *
 * Events are queued, sent in batches to POST /v1/batch (flushAt events or every flushInterval ms), retried
 * with exponential backoff and jitter on network errors, 429 and 5xx (Retry-After honoured), and kept in
 * localStorage until the collector has answered, so a reload or a navigation does not lose them. When the
 * page is hidden, what is queued leaves with navigator.sendBeacon; a beacon's answer cannot be read, so those
 * events are sent once more by the next page of the site (the job counts each messageId once). A 400 answer
 * is final: its rejected events are reported to the console and to onError, the accepted ones are done.
 * The anonymous id lives in a first-party cookie (zt_aid, one year).
 */
(function (window, document) {
  "use strict";
  if (window.zt && window.zt.__loaded) return;
  var VERSION = "1";
  var STORE = "zt_queue", BEACONED = "zt_beaconed", USER = "zt_uid";
  var cfg = null, queue = [], timer = null, timerAt = 0, sending = false, attempt = 0, anonId = null, userId = null;
  var stats = { queued: 0, accepted: 0, rejected: 0, retries: 0, beacons: 0, failed: 0 };

  function uuid() {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
    var b = new Uint8Array(16), h = [];
    window.crypto.getRandomValues(b);
    b[6] = (b[6] & 15) | 64; b[8] = (b[8] & 63) | 128;
    for (var i = 0; i < 16; i++) h.push((b[i] + 256).toString(16).slice(1));
    return h.slice(0, 4).join("") + "-" + h.slice(4, 6).join("") + "-" + h.slice(6, 8).join("") + "-" +
      h.slice(8, 10).join("") + "-" + h.slice(10).join("");
  }

  function load(key) {
    try { return JSON.parse(window.localStorage.getItem(key) || "null"); } catch (e) { return null; }
  }
  function save(key, value) {
    try { window.localStorage.setItem(key, JSON.stringify(value)); } catch (e) { /* private mode: memory only */ }
  }

  function cookie(name) {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === name) return decodeURIComponent(parts[i].slice(eq + 1));
    }
    return null;
  }
  function setCookie(name, value, days) {
    document.cookie = name + "=" + encodeURIComponent(value) + "; Max-Age=" + days * 86400 + "; Path=/; SameSite=Lax" +
      (window.location.protocol === "https:" ? "; Secure" : "");
  }
  function anonymousId() {
    if (!anonId) {
      anonId = cookie(cfg.cookieName) || uuid();
      setCookie(cfg.cookieName, anonId, 365);
    }
    return anonId;
  }

  function campaign() {
    var out = {}, keys = { utm_campaign: "name", utm_source: "source", utm_medium: "medium", utm_term: "term",
      utm_content: "content" }, found = false;
    var pairs = window.location.search.replace(/^\?/, "").split("&");
    for (var i = 0; i < pairs.length; i++) {
      var kv = pairs[i].split("=");
      if (keys[kv[0]] && kv[1]) { out[keys[kv[0]]] = decodeURIComponent(kv[1].replace(/\+/g, " ")); found = true; }
    }
    return found ? out : undefined;
  }

  function context() {
    var c = {
      library: { name: "zt.js", version: VERSION },
      page: { path: window.location.pathname, url: window.location.href, referrer: document.referrer,
        title: document.title },
      userAgent: window.navigator.userAgent, locale: window.navigator.language
    };
    var utm = campaign();
    if (utm) c.campaign = utm;
    return c;
  }

  function enqueue(msg) {
    if (!cfg) throw new Error("zt: call zt.init({host, writeKey}) first");
    msg.messageId = uuid();
    msg.anonymousId = anonymousId();
    if (userId) msg.userId = userId;
    msg.timestamp = new Date().toISOString();
    msg.context = context();
    queue.push(msg);
    stats.queued++;
    save(STORE, queue);
    if (queue.length >= cfg.flushAt) flush(); else schedule(cfg.flushInterval);
    return msg.messageId;
  }

  // One pending flush at a time: the earliest one asked for.
  function schedule(ms) {
    var at = Date.now() + ms;
    if (timer !== null) {
      if (timerAt <= at) return;
      window.clearTimeout(timer);
    }
    timerAt = at;
    timer = window.setTimeout(function () { timer = null; flush(); }, ms);
  }

  function forget(batch) {
    var ids = {};
    for (var i = 0; i < batch.length; i++) ids[batch[i].messageId] = true;
    queue = queue.filter(function (m) { return !ids[m.messageId]; });
    save(STORE, queue);
  }

  function report(kind, detail) {
    if (cfg.onError) { try { cfg.onError(kind, detail); } catch (e) { /* the page's handler */ } }
  }

  function flush() {
    if (sending || !queue.length || !cfg) return;
    var batch = queue.slice(0, cfg.batchSize);
    var body = JSON.stringify({ batch: batch, sentAt: new Date().toISOString() });
    sending = true;
    window.fetch(cfg.host + "/v1/batch", {
      method: "POST", body: body, mode: "cors", credentials: "omit", keepalive: body.length < 60000,
      headers: { "Content-Type": "application/json", "Authorization": "Basic " + window.btoa(cfg.writeKey + ":") }
    }).then(function (res) {
      return res.text().then(function (text) { answered(batch, res.status, text, res.headers.get("Retry-After")); });
    }, function (err) {
      answered(batch, 0, String(err), null);
    });
  }

  function answered(batch, status, text, retryAfter) {
    sending = false;
    var answer = null;
    try { answer = JSON.parse(text); } catch (e) { answer = null; }
    if (status === 200 || status === 400) {
      attempt = 0;
      forget(batch);
      stats.accepted += answer && typeof answer.accepted === "number" ? answer.accepted : 0;
      if (status === 400) {
        var rejected = (answer && answer.rejected) || [];
        stats.rejected += rejected.length;
        window.console.warn("zt: the collector rejected " + rejected.length + " event(s)", rejected);
        report("rejected", rejected);
      }
      if (queue.length) schedule(0);
    } else if (status === 413 && batch.length > 1) {
      cfg.batchSize = Math.max(1, Math.floor(batch.length / 2));
      schedule(0);
    } else if (status === 401 || status === 403 || status === 413 || status === 415) {
      // a configuration error: retrying cannot help; say so loudly and drop these events
      stats.failed += batch.length;
      forget(batch);
      window.console.error("zt: the collector refused " + batch.length + " event(s) (HTTP " + status + "): " +
        ((answer && answer.error) || text));
      report("refused", { status: status, error: (answer && answer.error) || text, events: batch.length });
    } else { // network error, 429, 5xx: back off and try again
      attempt++;
      stats.retries++;
      var delay = Math.min(cfg.maxBackoff, cfg.minBackoff * Math.pow(2, attempt - 1));
      delay = delay / 2 + Math.random() * delay / 2;
      if (retryAfter && /^[0-9]+$/.test(retryAfter)) delay = Math.max(delay, parseInt(retryAfter, 10) * 1000);
      schedule(Math.round(delay));
    }
  }

  // The page is going away (or to the background): hand what is queued to the browser as beacons.
  function onHide() {
    if (!cfg || !queue.length || !window.navigator.sendBeacon) return;
    var beaconed = load(BEACONED) || [];
    while (queue.length) {
      var batch = queue.slice(0, cfg.batchSize);
      var body = JSON.stringify({ batch: batch, sentAt: new Date().toISOString(), writeKey: cfg.writeKey });
      // text/plain: a CORS-safelisted type, so no preflight (a beacon cannot wait for one)
      if (!window.navigator.sendBeacon(cfg.host + "/v1/batch", new Blob([body], { type: "text/plain;charset=UTF-8" })))
        break;
      stats.beacons++;
      beaconed = beaconed.concat(batch);
      forget(batch);
    }
    save(BEACONED, beaconed);
  }

  var zt = {
    __loaded: true,
    VERSION: VERSION,
    stats: stats,
    /** Start: {host, writeKey, flushAt=20, batchSize=100, flushInterval=1000, minBackoff=500, maxBackoff=60000,
     *  cookieName="zt_aid", onError(kind, detail)}. Re-sends what an earlier page left queued or beaconed. */
    init: function (options) {
      if (!options || !options.host || !options.writeKey) throw new Error("zt.init needs {host, writeKey}");
      cfg = {
        host: String(options.host).replace(/\/+$/, ""), writeKey: options.writeKey,
        flushAt: options.flushAt || 20, batchSize: options.batchSize || 100, flushInterval: options.flushInterval || 1000,
        minBackoff: options.minBackoff || 500, maxBackoff: options.maxBackoff || 60000,
        cookieName: options.cookieName || "zt_aid", onError: options.onError || null
      };
      userId = load(USER);
      queue = (load(BEACONED) || []).concat(load(STORE) || []);
      save(BEACONED, []);
      save(STORE, queue);
      document.addEventListener("visibilitychange", function () {
        if (document.visibilityState === "hidden") onHide();
      });
      window.addEventListener("pagehide", onHide);
      if (queue.length) schedule(0);
      return zt;
    },
    track: function (event, properties) {
      return enqueue({ type: "track", event: event, properties: properties || {} });
    },
    page: function (name, properties) {
      var msg = { type: "page", properties: properties || {} };
      if (name) msg.name = name;
      return enqueue(msg);
    },
    identify: function (id, traits) {
      if (id !== undefined && id !== null && id !== "") { userId = String(id); save(USER, userId); }
      return enqueue({ type: "identify", traits: traits || {} });
    },
    /** Forget the user and the anonymous id (log out). */
    reset: function () {
      userId = null; anonId = null; save(USER, null);
      setCookie(cfg.cookieName, "", 0);
    },
    flush: function () { flush(); },
    anonymousId: function () { return anonymousId(); },
    queued: function () { return queue.length; }
  };
  window.zt = zt;
})(window, document);
