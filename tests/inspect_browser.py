#!/usr/bin/env python3
"""Opens a char_rnn inspect page in headless Chromium over the DevTools protocol (standard library
only), picks a unit through the page's own controls, checks the rendered colours of the first
characters against the values in the JSON export, reports the render time and takes a screenshot.

Usage: inspect_browser.py PAGE.html EXPORT.json SCREENSHOT.png [--layer L] [--series NAME]
       [--unit J] [--chars K] [--max-render-ms MS] [--max-bytes B]
Exit status 0 when every check passes; prints one line per check.
"""
import argparse
import base64
import json
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse


class DevTools:
    """A minimal client of the DevTools protocol over a WebSocket (RFC 6455, client side)."""

    def __init__(self, url):
        parsed = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((parsed.hostname, parsed.port), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {parsed.path} HTTP/1.1\r\nHost: {parsed.hostname}:{parsed.port}\r\n"
                   f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        response = b""
        while b"\r\n\r\n" not in response:
            response += self.sock.recv(4096)
        if b" 101 " not in response.split(b"\r\n")[0]:
            raise RuntimeError("WebSocket handshake refused: " + response.decode(errors="replace"))
        self.buffer = response.split(b"\r\n\r\n", 1)[1]
        self.next_id = 0

    def _read(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("DevTools connection closed")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def _send(self, text):
        payload = text.encode()
        header = bytes([0x81])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _receive(self):
        message = b""
        while True:
            first, second = self._read(2)
            n = second & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            data = self._read(n)
            opcode = first & 0x0F
            if opcode in (0x1, 0x0):
                message += data
                if first & 0x80:
                    return json.loads(message)
            elif opcode == 0x8:
                raise RuntimeError("DevTools closed the connection")

    def call(self, method, **params):
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = self._receive()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")


def colour(v, lo, hi):
    """The page's colour map (inspect_page.html, colour()): blue - white - red over [lo, hi]."""
    x = max(-1.0, min(1.0, 2 * (v - lo) / (hi - lo) - 1))
    k = int(math.floor(255 - 200 * abs(x) + 0.5))
    return (255, k, k) if x >= 0 else (k, k, 255)


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("page")
    parser.add_argument("export")
    parser.add_argument("screenshot")
    parser.add_argument("--layer", type=int, default=1)
    parser.add_argument("--series", default="c")
    parser.add_argument("--unit", type=int, default=3)
    parser.add_argument("--chars", type=int, default=40)
    parser.add_argument("--max-render-ms", type=float, default=2000)
    parser.add_argument("--max-bytes", type=int, default=5_000_000)
    parser.add_argument("--element-shot", action="append", default=[],
                        help="SELECTOR=FILE.png: also a screenshot of one element (for docs)")
    args = parser.parse_args()

    failures = []

    def check(ok, text):
        print(("ok    " if ok else "FAIL  ") + text)
        if not ok:
            failures.append(text)

    size = os.path.getsize(args.page)
    check(size < args.max_bytes, f"page size {size} bytes < {args.max_bytes}")
    export = json.load(open(args.export))

    chromium = find_chromium()
    if chromium is None:
        print("inspect_browser: no chromium found", file=sys.stderr)
        return 2
    profile = tempfile.mkdtemp(prefix="cellgrad-chromium-")
    process = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--window-size=1280,1800", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        deadline = time.time() + 60
        while url is None and time.time() < deadline:
            line = process.stderr.readline()
            if not line and process.poll() is not None:
                break
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            if found:
                url = found.group(1)
        if url is None:
            raise RuntimeError("chromium did not start its DevTools server")
        browser = DevTools(url)
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        host = urllib.parse.urlparse(url).netloc
        tab = DevTools(f"ws://{host}/devtools/page/{target}")
        tab.call("Page.enable")
        tab.call("Emulation.setDeviceMetricsOverride", width=1280, height=1800,
                 deviceScaleFactor=1, mobile=False)
        page_url = "file://" + os.path.abspath(args.page)
        tab.call("Page.navigate", url=page_url)
        ready = None
        deadline = time.time() + 60
        while time.time() < deadline:
            ready = tab.evaluate("document.getElementById('status') ? "
                                 "document.getElementById('status').dataset.ready : null")
            if ready in ("1", "error"):
                break
            time.sleep(0.05)
        status = tab.evaluate("document.getElementById('status').textContent")
        check(ready == "1", f"page rendered: {status}")
        if ready != "1":
            raise RuntimeError("the page did not render")
        render_ms = float(tab.evaluate("document.getElementById('status').dataset.renderMs"))
        check(render_ms < args.max_render_ms,
              f"render time {render_ms:.0f} ms (navigation start to everything drawn) < "
              f"{args.max_render_ms:.0f} ms")

        # Pick the unit through the page's own controls: the layer and value selects and the
        # unit box, each followed by the change event a user's edit would fire.
        picked = tab.evaluate(f"""(() => {{
            const set = (id, value) => {{ const e = document.getElementById(id); e.value = value;
                e.dispatchEvent(new Event('change')); }};
            set('layer', '{args.layer}');
            const options = [...document.getElementById('series').options];
            const wanted = options.find((o) => o.textContent === '{args.series}');
            if (!wanted) return null;
            set('series', wanted.value);
            set('unit', '{args.unit}');
            return document.getElementById('layer').value + ',' +
                   options[+document.getElementById('series').value].textContent + ',' +
                   document.getElementById('unit').value;
        }})()""")
        check(picked == f"{args.layer},{args.series},{args.unit}",
              f"picked layer {args.layer}, {args.series}, unit {args.unit} through the controls "
              f"(page shows {picked})")
        rendered = tab.evaluate(f"""[...document.querySelectorAll('#text span[data-t]')]
            .slice(0, {args.chars}).map((s) => getComputedStyle(s).backgroundColor)""")
        meta = tab.evaluate("JSON.parse(document.getElementById('meta').textContent)")
        series_meta = next(s for s in meta["layers"][args.layer]["series"]
                           if s["name"] == args.series)
        bits = series_meta["bits"]
        lo, hi = series_meta["lo"], series_meta["hi"]
        # Quantisation moves a value by at most half a step: (hi - lo) / (2^bits - 1) / 2, which
        # moves a colour channel by at most 200 / (2^bits - 1), plus one for rounding.
        tolerance = math.ceil(200 / ((1 << bits) - 1)) + 1
        values = export["layers"][args.layer]["series"][args.series]
        worst = 0
        compared = 0
        for t, text in enumerate(rendered):
            got = tuple(int(x) for x in re.findall(r"\d+", text)[:3])
            v = values[t][args.unit]
            if series_meta["transform"] == "tanh":
                v = math.tanh(v)
            want = colour(v, lo, hi)
            worst = max(worst, max(abs(a - b) for a, b in zip(got, want)))
            compared += 1
            if t < 3:
                print(f"      character {t}: value {v:+.4f} -> expected rgb{want}, rendered {text}")
        check(compared == min(args.chars, len(values)) and worst <= tolerance,
              f"rendered colours of the first {compared} characters match the JSON export "
              f"(largest channel difference {worst}, allowed {tolerance} at {bits} bits)")

        # Hovering a character shows its top-5 next-character guesses (from the export).
        tip = tab.evaluate("""(() => { const s = document.querySelector('#text span[data-t="2"]');
            const r = s.getBoundingClientRect();
            s.dispatchEvent(new MouseEvent('mousemove', {bubbles: true, clientX: r.left + 2,
                clientY: r.top + 2}));
            return document.getElementById('tip').textContent; })()""")
        k = export["top_k"]
        guesses = [export["vocabulary"][i] for i in export["top_index"][2 * k:3 * k]]
        probs = [100 * p for p in export["top_prob"][2 * k:3 * k]]
        listed = re.findall(r"\n  '(.+?)'  ([0-9.]+)%", tip)
        ok = [g for g, _ in listed] == guesses and all(
            abs(float(p) - q) <= 0.051 for (_, p), q in zip(listed, probs))
        if not ok:
            print("      tooltip: " + repr(tip))
        check(ok, f"hovering character 2 shows its {k} next-character guesses "
                  f"({', '.join(f'{g!r} {q:.1f}%' for g, q in zip(guesses[:2], probs[:2]))}, ...)")

        shot = tab.call("Page.captureScreenshot", format="png")["data"]
        with open(args.screenshot, "wb") as out:
            out.write(base64.b64decode(shot))
        check(os.path.getsize(args.screenshot) > 1000, f"screenshot written to {args.screenshot}")
        for request in args.element_shot:
            selector, path = request.split("=", 1)
            box = tab.evaluate(f"""(() => {{ const r = document.querySelector({json.dumps(selector)})
                .getBoundingClientRect(); return [r.left + scrollX, r.top + scrollY, r.width,
                r.height]; }})()""")
            clip = dict(zip(("x", "y", "width", "height"), box), scale=1)
            data = tab.call("Page.captureScreenshot", format="png", clip=clip,
                            captureBeyondViewport=True)["data"]
            with open(path, "wb") as out:
                out.write(base64.b64decode(data))
            print(f"      {selector} -> {path}")
        try:
            browser.call("Browser.close")
        except Exception:
            pass
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(profile, ignore_errors=True)
    print("inspect_browser: " + ("all checks passed" if not failures else
                                 f"{len(failures)} check(s) failed"))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
