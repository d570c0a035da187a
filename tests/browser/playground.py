"""Drive the playground page (app/static) in headless Chromium, the way a person would.

`drive_playground` opens the page, picks a dataset, replaces the page's default hidden layers with the
requested ones (Remove / "Add layer" buttons), trains, and returns what the page showed:

* the #status line the page writes (`Session 7: completed · epoch 60/60 · loss 0.0213 · accuracy 99.5%`);
* the loss chart (#loss-chart), traced from its pixels: the page exposes no chart data, so the line is
  read back with getImageData (coloured pixels inside the grey plot frame, one point per pixel column),
  and its "epoch N" label is read by comparing its pixels with the labels the browser renders for each N;
* the decision boundary canvas (#boundary) before and after training, summarised from its pixels
  (painted share, colour hues, dominant hue per cell of a coarse grid);
* the session's metrics, session and model as the server reports them, fetched by the page's origin
  (the same TLS trust as the page) so callers can check the chart against the truth;
* every browser console message (SEVERE ones separately) and a PNG screenshot of the whole page.

Only Debian's /usr/bin/chromium and /usr/bin/chromedriver are used (scripts/host-deps.sh installs them):
Selenium Manager never runs, so nothing is downloaded. Only loopback URLs are accepted, and the browser
resolves no host names but localhost. For HTTPS, pass the SPKI hash of the server certificate
(`spki_hash(cert.pem)`): Chromium then accepts that one key despite a self-signed chain and nothing else.

Also usable by hand against a running app:  python -m tests.browser.playground URL SCREENSHOT [--cert PEM]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import ipaddress
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1280, 900)
FINAL_STATES = ("completed", "stopped", "failed", "interrupted")
STATUS_RE = re.compile(
    r"Session (?P<id>\d+): (?P<status>\w+) · epoch (?P<epoch>\d+)/(?P<epochs>\d+)"
    r"(?: · loss (?P<loss>[-+\d.e]+|NaN|Infinity))?(?: · accuracy (?P<accuracy>[\d.]+)%)?"
)
T = TypeVar("T")

# --- pixel readers (run in the page; return small summaries, not the pixels) ----------------------

# Summary of one canvas: share of painted pixels and, among clearly coloured pixels, the share of each
# 30° hue sector, plus the dominant sector per cell of a cells x cells grid (row 0 at the top).
CANVAS_STATS_JS = """
const [id, cells] = arguments;
const canvas = document.getElementById(id);
const { width, height } = canvas;
const data = canvas.getContext("2d").getImageData(0, 0, width, height).data;
let painted = 0, chromatic = 0;
const hues = {};
const grid = Array.from({ length: cells * cells }, () => ({}));
for (let y = 0; y < height; y++) {
  for (let x = 0; x < width; x++) {
    const i = (y * width + x) * 4;
    const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
    if (a === 0) continue;
    painted++;
    const max = Math.max(r, g, b), min = Math.min(r, g, b), c = max - min;
    if (c < 60 || a < 24) continue;  // white point outlines, grey text, faint blends
    let h = max === r ? ((g - b) / c) % 6 : max === g ? (b - r) / c + 2 : (r - g) / c + 4;
    h = (h * 60 + 360) % 360;
    const sector = Math.floor(h / 30) * 30;
    chromatic++;
    hues[sector] = (hues[sector] || 0) + 1;
    const cell = grid[Math.min(cells - 1, Math.floor((y * cells) / height)) * cells
                      + Math.min(cells - 1, Math.floor((x * cells) / width))];
    cell[sector] = (cell[sector] || 0) + 1;
  }
}
const dominant = (counts) => {
  let best = null, most = 0;
  for (const [k, n] of Object.entries(counts)) if (n > most) { best = Number(k); most = n; }
  return best;
};
for (const k of Object.keys(hues)) hues[k] /= Math.max(1, chromatic);
return { width, height, painted: painted / (width * height), hues, cells: grid.map(dominant) };
"""

# The line of a line chart: the plot frame is the grey rectangle (rows/columns that are mostly grey);
# inside it, the alpha-weighted mean y of the coloured pixels of each column. Coordinates are pixel
# centres, so a frame stroked at y=10 (rows 9 and 10 half covered) comes back as 10.0.
LINE_TRACE_JS = """
const canvas = document.getElementById(arguments[0]);
const { width, height } = canvas;
const data = canvas.getContext("2d").getImageData(0, 0, width, height).data;
const px = (x, y) => data.subarray((y * width + x) * 4, (y * width + x) * 4 + 4);
const grey = (p) => p[3] > 0 && Math.max(p[0], p[1], p[2]) - Math.min(p[0], p[1], p[2]) < 30;
const coloured = (p) => p[3] > 40 && Math.max(p[0], p[1], p[2]) - Math.min(p[0], p[1], p[2]) >= 80;
const rows = [], cols = [];
for (let y = 0; y < height; y++) {
  let n = 0;
  for (let x = 0; x < width; x++) if (grey(px(x, y))) n++;
  if (n > width / 2) rows.push(y);
}
for (let x = 0; x < width; x++) {
  let n = 0;
  for (let y = 0; y < height; y++) if (grey(px(x, y))) n++;
  if (n > height / 2) cols.push(x);
}
if (rows.length < 2 || cols.length < 2) return null;
const edge = (list, first) => {
  // A 1 px stroke between pixels covers two neighbouring rows: use their shared border.
  const run = first ? list.filter((v) => v - list[0] <= 1) : list.filter((v) => list[list.length - 1] - v <= 1);
  return run.reduce((s, v) => s + v + 0.5, 0) / run.length;
};
const frame = { top: edge(rows, true), bottom: edge(rows, false), left: edge(cols, true), right: edge(cols, false) };
const points = [];
for (let x = Math.ceil(frame.left); x < Math.floor(frame.right); x++) {
  let weight = 0, sum = 0;
  for (let y = Math.ceil(frame.top) - 2; y < Math.floor(frame.bottom) + 2; y++) {
    const p = px(x, Math.max(0, Math.min(height - 1, y)));
    if (coloured(p)) { weight += p[3]; sum += p[3] * (y + 0.5); }
  }
  if (weight > 0) points.push([x + 0.5, sum / weight]);
}
// The "epoch N" label under the right half of the frame, as the set of epoch counts whose label the
// browser renders to the same pixels (alpha only; both drawn right-aligned at whole-pixel positions,
// so the glyphs rasterise identically up to a whole-pixel shift). Keep LABEL_FONT in step with app.js.
const ink = (get, x0, y0, x1, y1) => {
  let left = x1, right = x0 - 1, top = y1, bottom = y0 - 1;
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      if (get(x, y) > 0) {
        left = Math.min(left, x); right = Math.max(right, x); top = Math.min(top, y); bottom = Math.max(bottom, y);
      }
    }
  }
  if (right < left) return null;
  const w = right - left + 1, h = bottom - top + 1, alpha = new Uint8Array(w * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) alpha[y * w + x] = get(left + x, top + y);
  return { w, h, alpha };
};
const shown = ink((x, y) => px(x, y)[3], Math.floor((frame.left + frame.right) / 2), Math.floor(frame.bottom) + 2,
                  width, height);
const label = { epochs: [], best: null, diff: null };
if (shown) {
  const probe = document.createElement("canvas");
  probe.width = width;
  probe.height = height;
  const pctx = probe.getContext("2d", { willReadFrequently: true });
  pctx.font = arguments[1];
  pctx.textAlign = "right";
  for (let n = 1; n <= arguments[2]; n++) {
    pctx.clearRect(0, 0, width, height);
    pctx.fillText(`epoch ${n}`, width - 4, height - 6);
    const pdata = pctx.getImageData(0, 0, width, height).data;
    const drawn = ink((x, y) => pdata[(y * width + x) * 4 + 3], 0, 0, width, height);
    if (!drawn || drawn.w !== shown.w || drawn.h !== shown.h) continue;
    let diff = 0;
    for (let i = 0; i < drawn.alpha.length; i++) diff = Math.max(diff, Math.abs(drawn.alpha[i] - shown.alpha[i]));
    if (diff <= 64) label.epochs.push(n);  // same label: ~10 apart (antialiasing)
    if (label.diff === null || diff < label.diff) { label.best = n; label.diff = diff; }
  }
}
return { frame, points, label };
"""
LABEL_FONT = "11px system-ui, sans-serif"  # app.js drawLineChart

SERVER_VIEW_JS = """
const [sessionId, done] = arguments;
const get = (path) => fetch(path, { cache: "no-store" }).then((r) => {
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
});
Promise.all([get(`/api/sessions/${sessionId}`), get(`/api/sessions/${sessionId}/metrics`)])
  .then(([session, metrics]) =>
    get(`/api/models/${session.model_id}`).then((model) => done({ session, metrics, model })))
  .catch((error) => done({ error: String(error) }));
"""

SAMPLE_REQUESTS_JS = (
    "return performance.getEntriesByType('resource').filter((e) => /\\/api\\/datasets\\/[^/]+\\/sample\\?/"
    ".test(e.name)).length;"
)


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CanvasStats:
    """What a canvas shows, summarised: painted share (alpha > 0), share of each 30° hue sector among
    clearly coloured pixels, and the dominant hue sector per grid cell (None: nothing coloured there)."""

    width: int
    height: int
    painted: float
    hues: dict[int, float]
    cells: tuple[tuple[int | None, ...], ...]

    def hue_count(self, min_share: float = 0.05) -> int:
        """How many hue sectors each hold at least `min_share` of the coloured pixels."""
        return sum(1 for share in self.hues.values() if share >= min_share)

    @classmethod
    def from_js(cls, raw: dict[str, Any], cells: int) -> CanvasStats:
        flat = raw["cells"]
        return cls(
            width=int(raw["width"]),
            height=int(raw["height"]),
            painted=float(raw["painted"]),
            hues={int(k): float(v) for k, v in raw["hues"].items()},
            cells=tuple(tuple(flat[r * cells : (r + 1) * cells]) for r in range(cells)),
        )


@dataclass(frozen=True)
class LineTrace:
    """A chart line read back from its pixels: per pixel column inside the plot frame, x as a fraction
    of the frame width and the value as a fraction of the frame height (0: bottom edge, 1: top edge).
    The page plots loss from 0 (bottom) to the largest loss shown (top), and labels the chart with the
    number of epochs it plots ("epoch 60" under the right end of the frame)."""

    points: tuple[tuple[float, float], ...]
    plot_width_px: float
    plot_height_px: float
    # The epoch count the label shows: None when there is no label, or when it matches no count (or
    # several) up to the `max_epochs` the chart was read with.
    epochs_shown: int | None = None

    @property
    def span(self) -> float:
        """Fraction of the frame width the line covers (about 1 once the chart has two or more points)."""
        return self.points[-1][0] - self.points[0][0] if self.points else 0.0

    def mean(self, start: float, end: float) -> float:
        values = [v for x, v in self.points if start <= x <= end]
        return sum(values) / len(values) if values else float("nan")

    def deviation(self, values: Sequence[float]) -> float:
        """Largest vertical distance, in frame heights, between the traced line and the polyline the
        page would draw for `values` (evenly spaced, scaled 0..max), allowing for the 2 px stroke."""
        if len(values) < 2 or not self.points:
            return float("inf")
        top = max(values) or 1.0
        ys = [v / top for v in values]
        n = len(ys) - 1
        half_px = 1.5 / self.plot_width_px
        stroke = 1.5 / self.plot_height_px

        def at(x: float) -> float:
            i = min(n - 1, max(0, int(x * n)))
            t = min(1.0, max(0.0, x * n - i))
            return ys[i] + (ys[i + 1] - ys[i]) * t

        worst = 0.0
        for x, v in self.points:
            low_x, high_x = max(0.0, x - half_px), min(1.0, x + half_px)
            # The line's extent over this pixel column (plus a neighbour each side): both ends and
            # every vertex in between.
            seen = [at(low_x), at(high_x), *ys[int(low_x * n) + 1 : int(high_x * n) + 1]]
            low, high = min(seen) - stroke, max(seen) + stroke
            worst = max(worst, low - v, v - high)
        return worst

    @classmethod
    def from_js(cls, raw: dict[str, Any] | None) -> LineTrace:
        if raw is None:
            return cls(points=(), plot_width_px=0.0, plot_height_px=0.0)
        f = raw["frame"]
        width, height = f["right"] - f["left"], f["bottom"] - f["top"]
        points = tuple(((x - f["left"]) / width, (f["bottom"] - y) / height) for x, y in raw["points"])
        matches = raw["label"]["epochs"]
        shown = int(matches[0]) if len(matches) == 1 else None
        return cls(points=points, plot_width_px=width, plot_height_px=height, epochs_shown=shown)


@dataclass(frozen=True)
class PlaygroundResult:
    url: str
    dataset: str
    layers: tuple[tuple[int, str], ...]
    status_text: str
    status_is_error: bool
    session_id: int | None
    status: str | None  # the session status the page shows: completed, stopped, failed, interrupted
    epoch: int | None
    epochs: int | None
    final_loss: float | None  # from the status line (4 decimals)
    accuracy: float | None  # from the status line, 0..1
    loss_chart: LineTrace
    boundary_before: CanvasStats  # after the data sample was drawn, before training
    boundary: CanvasStats  # after training
    server_session: dict[str, Any]
    server_model: dict[str, Any]
    server_losses: tuple[float, ...]
    console: tuple[dict[str, Any], ...]
    console_errors: tuple[str, ...]  # SEVERE console messages
    screenshot: Path
    timings: dict[str, float] = field(default_factory=dict)  # seconds from browser start


class PlaygroundError(AssertionError):
    """The page did not get where it should; the message carries the status line and console."""


# --- helpers -------------------------------------------------------------------------------------


def spki_hash(cert_pem_path: Path | str) -> str:
    """base64(sha256(SubjectPublicKeyInfo DER)) of a PEM certificate, as Chromium's
    --ignore-certificate-errors-spki-list expects it (RFC 7469 pin format)."""
    cert = x509.load_pem_x509_certificate(Path(cert_pem_path).read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def require_loopback(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    host = parts.hostname
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"only loopback URLs are driven, not {url!r}")


def browser_available() -> bool:
    return CHROMIUM.exists() and CHROMEDRIVER.exists()


def _options(profile: Path, host: str, tls_spki_hash: str | None) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    args = [
        "--headless=new",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={profile}",  # also required for the SPKI list to be honoured
        "--disable-dev-shm-usage",  # containers often have a 64 MB /dev/shm
        "--disable-gpu",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        # Loopback only: no proxy, no name resolution but localhost, no background traffic.
        "--no-proxy-server",
        f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE {host}",  # IP literals too
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        "--metrics-recording-only",
    ]
    if os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to start its sandbox as root
    if tls_spki_hash:
        args.append(f"--ignore-certificate-errors-spki-list={tls_spki_hash}")
    for arg in args:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return options


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.1, self.end - time.monotonic())


def _wait(deadline: _Deadline, what: str, probe: Callable[[], T | None], interval: float = 0.1) -> T:
    """Poll `probe` until it returns something truthy; PlaygroundError (with `what`) at the deadline."""
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline.end:
            raise PlaygroundError(f"timed out ({deadline.seconds:.0f} s budget) waiting for {what}")
        time.sleep(interval)


def _type(element: WebElement, value: object) -> None:
    """Replace an input's text like a person: select all, type, Tab (one `change` event on blur).
    Element.clear() would fire a change with an empty value, and the page would fetch a bad sample."""
    element.click()
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(str(value), Keys.TAB)


def _canvas(driver: WebDriver, canvas_id: str, cells: int = 4) -> CanvasStats:
    return CanvasStats.from_js(driver.execute_script(CANVAS_STATS_JS, canvas_id, cells), cells)


def _line(driver: WebDriver, canvas_id: str, max_epochs: int) -> LineTrace:
    """The chart's line and the epoch count of its label (looked for among 1..max_epochs)."""
    return LineTrace.from_js(driver.execute_script(LINE_TRACE_JS, canvas_id, LABEL_FONT, max_epochs))


def _status(driver: WebDriver) -> tuple[str, bool]:
    element = driver.find_element(By.ID, "status")
    return element.text, "error" in (element.get_attribute("class") or "").split()


def _screenshot(driver: WebDriver, path: Path) -> None:
    """The whole page, not just the viewport (Chromium's DevTools capture)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight];"
    )
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1},
        },
    )
    path.write_bytes(base64.b64decode(shot["data"]))


def _console(driver: WebDriver) -> list[dict[str, Any]]:
    return list(driver.get_log("browser"))


# --- the flow ------------------------------------------------------------------------------------


def drive_playground(
    base_url: str,
    screenshot: Path,
    *,
    tls_spki_hash: str | None = None,
    timeout_s: float = 60.0,
    dataset: str = "xor",
    n_samples: int = 200,
    noise: float = 0.05,
    layers: Sequence[tuple[int, str]] = ((8, "tanh"),),
    epochs: int = 60,
    learning_rate: float = 0.05,
    batch_size: int = 16,
) -> PlaygroundResult:
    """Open the page at `base_url`, define and train a network, and report what the page showed.

    Raises PlaygroundError when a step does not happen within `timeout_s` (all steps together); the
    screenshot is written then too, and the status line and console are added as exception notes.
    A run that ends with a failed session still returns a result: check `status` and `console_errors`."""
    require_loopback(base_url)
    url = base_url.rstrip("/") + "/"
    host = urlsplit(url).hostname or "localhost"
    deadline = _Deadline(timeout_s)
    started = time.monotonic()
    timings: dict[str, float] = {}
    console: list[dict[str, Any]] = []

    def mark(name: str) -> None:
        timings[name] = round(time.monotonic() - started, 3)

    with tempfile.TemporaryDirectory(prefix="nnp-chromium-") as profile:
        service = Service(executable_path=str(CHROMEDRIVER), log_output=str(Path(profile) / "chromedriver.log"))
        driver = webdriver.Chrome(service=service, options=_options(Path(profile) / "profile", host, tls_spki_hash))
        mark("browser_started")
        try:
            driver.set_page_load_timeout(deadline.left())
            driver.get(url)
            mark("page_loaded")
            if not driver.find_elements(By.ID, "dataset"):
                # e.g. Chromium's certificate interstitial ("Privacy error") when the key is not trusted
                raise PlaygroundError(f"{url} did not serve the playground page (title {driver.title!r})")

            # Ready: the dataset list came from /api/datasets and the sample points are drawn.
            _wait(
                deadline,
                "the dataset list and the sample points",
                lambda: (
                    driver.execute_script("return document.querySelectorAll('#dataset option').length")
                    and _canvas(driver, "boundary").painted > 0
                ),
            )
            mark("page_ready")

            # Data: each change refetches the sample; wait for each fetch so the points drawn are the last.
            samples = int(driver.execute_script(SAMPLE_REQUESTS_JS))

            def changed() -> None:
                nonlocal samples
                samples += 1
                _wait(
                    deadline,
                    "the data sample to reload",
                    lambda: int(driver.execute_script(SAMPLE_REQUESTS_JS)) >= samples,
                )

            select = Select(driver.find_element(By.ID, "dataset"))
            if select.first_selected_option.get_attribute("value") != dataset:
                select.select_by_value(dataset)
                changed()
            for element_id, value in (("n-samples", n_samples), ("noise", noise)):
                element = driver.find_element(By.ID, element_id)
                if float(element.get_attribute("value") or "nan") != float(value):
                    _type(element, value)
                    changed()

            # Network: remove the page's default layers, then add ours one by one.
            for button in driver.find_elements(By.CSS_SELECTOR, "#layers .remove-layer"):
                button.click()
            for width, activation in layers:
                driver.find_element(By.ID, "add-layer").click()
                item = driver.find_elements(By.CSS_SELECTOR, "#layers .layer")[-1]
                _type(item.find_element(By.CSS_SELECTOR, ".layer-width"), width)
                Select(item.find_element(By.CSS_SELECTOR, ".layer-activation")).select_by_value(activation)
            shown = len(driver.find_elements(By.CSS_SELECTOR, "#layers .layer"))
            if shown != len(layers):
                raise PlaygroundError(f"{shown} layers on the page after defining {len(layers)}")

            # Training.
            for element_id, value in (("epochs", epochs), ("learning-rate", learning_rate), ("batch-size", batch_size)):
                _type(driver.find_element(By.ID, element_id), value)
            boundary_before = _canvas(driver, "boundary")
            driver.find_element(By.ID, "train").click()
            mark("train_clicked")

            def finished() -> re.Match[str] | None:
                text, _ = _status(driver)
                match = STATUS_RE.match(text)
                # The page re-enables Train only after drawing the final charts and boundary.
                if match and match["status"] in FINAL_STATES and driver.find_element(By.ID, "train").is_enabled():
                    return match
                if driver.find_element(By.ID, "train").is_enabled() and _status(driver)[1]:
                    raise PlaygroundError(f"the page reported an error: {text!r}")
                return None

            match = _wait(deadline, "the training to finish", finished, interval=0.2)
            mark("training_finished")
            status_text, status_is_error = _status(driver)
            completed = match["status"] == "completed"
            if completed:
                _wait(
                    deadline,
                    "the decision boundary",
                    lambda: (stats := _canvas(driver, "boundary")).painted > 0.95 and stats.hue_count() >= 2,
                )
                mark("boundary_drawn")
            boundary = _canvas(driver, "boundary")

            def loss_line() -> LineTrace | None:
                trace = _line(driver, "loss-chart", int(match["epochs"]))
                return trace if trace.points else None

            if int(match["epoch"]) >= 2:  # a chart of one point draws no line
                loss_chart = _wait(deadline, "the loss chart line", loss_line)
            else:
                loss_chart = _line(driver, "loss-chart", int(match["epochs"]))

            driver.set_script_timeout(deadline.left())
            server = driver.execute_async_script(SERVER_VIEW_JS, int(match["id"]))
            if "error" in server:
                raise PlaygroundError(f"could not read the session back through the page: {server['error']}")
            console = _console(driver)
            _screenshot(driver, screenshot)
            mark("done")
        except (PlaygroundError, WebDriverException) as exc:
            try:
                console += _console(driver)
                _screenshot(driver, screenshot)
                text = _status(driver)[0]
            except WebDriverException:
                text = "?"
            exc.add_note(f"url: {url}\nstatus line: {text!r}\nscreenshot: {screenshot}")
            exc.add_note("console:\n" + "\n".join(f"  {e.get('level')}: {e.get('message')}" for e in console))
            raise
        finally:
            driver.quit()

    loss = match["loss"]
    return PlaygroundResult(
        url=url,
        dataset=dataset,
        layers=tuple(layers),
        status_text=status_text,
        status_is_error=status_is_error,
        session_id=int(match["id"]),
        status=match["status"],
        epoch=int(match["epoch"]),
        epochs=int(match["epochs"]),
        final_loss=float(loss) if loss is not None else None,
        accuracy=float(match["accuracy"]) / 100 if match["accuracy"] is not None else None,
        loss_chart=loss_chart,
        boundary_before=boundary_before,
        boundary=boundary,
        server_session=server["session"],
        server_model=server["model"],
        server_losses=tuple(float(m["loss"]) for m in server["metrics"]["items"]),
        console=tuple(console),
        console_errors=tuple(str(e.get("message")) for e in console if e.get("level") == "SEVERE"),
        screenshot=screenshot,
        timings=timings,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train a network through the playground page in headless Chromium.")
    parser.add_argument("url", help="loopback base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("screenshot", type=Path, help="where to write the PNG")
    parser.add_argument("--cert", type=Path, help="PEM certificate of an HTTPS server to trust (that one only)")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    try:
        result = drive_playground(
            args.url, args.screenshot, tls_spki_hash=spki_hash(args.cert) if args.cert else None, timeout_s=args.timeout
        )
    except (PlaygroundError, TimeoutException) as exc:
        print(f"FAILED: {exc}\n" + "\n".join(getattr(exc, "__notes__", [])))
        return 1
    chart, losses = result.loss_chart, result.server_losses
    summary = {
        "status": result.status_text,
        "console_errors": result.console_errors,
        "loss_chart": {
            "epochs_shown": chart.epochs_shown,
            "server_epochs": len(losses),
            "deviation": round(chart.deviation(losses), 4),
            "span": round(chart.span, 3),
        },
        "boundary": {"painted": round(result.boundary.painted, 3), "hues": result.boundary.hues},
        "timings": result.timings,
        "screenshot": str(result.screenshot),
    }
    print(json.dumps(summary, indent=2))
    ok = result.status == "completed" and not result.console_errors and chart.epochs_shown == len(losses)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
