#!/usr/bin/env python3
"""Seconds from navigation until a dml HTML page says it is ready, in headless Chromium.

dml's pages (dml gallery) set document.body.dataset.ready = "true" once their script has
drawn everything. This opens PAGE (a path) through chromedriver, as the browser tests do, and
prints the time to that flag for each of --repeats fresh sessions, then the median and range.
Standard library only: W3C WebDriver over HTTP.

    python3 scripts/page_ready_time.py runs/latest/gallery/index.html --repeats 5
"""
import argparse, json, pathlib, socket, statistics, subprocess, time, urllib.request


def call(port, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)["value"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def once(port, url, timeout):
    caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000",
                 "--disable-dev-shm-usage", "--allow-file-access-from-files"]}}}}
    session = call(port, "POST", "/session", caps)["sessionId"]
    try:
        call(port, "POST", f"/session/{session}/timeouts", {"pageLoad": timeout * 1000})
        start = time.perf_counter()
        call(port, "POST", f"/session/{session}/url", {"url": url})
        while True:
            ready = call(port, "POST", f"/session/{session}/execute/sync",
                         {"script": "return document.body && document.body.dataset.ready === 'true'",
                          "args": []})
            if ready:
                return time.perf_counter() - start
            if time.perf_counter() - start > timeout:
                raise SystemExit(f"{url}: not ready after {timeout} s")
            time.sleep(0.01)
    finally:
        call(port, "DELETE", f"/session/{session}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    url = pathlib.Path(args.page).resolve().as_uri()
    port = free_port()
    driver = subprocess.Popen(["/usr/bin/chromedriver", f"--port={port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                call(port, "GET", "/status")
                break
            except OSError:
                time.sleep(0.05)
        times = [once(port, url, args.timeout) for _ in range(args.repeats)]
    finally:
        driver.kill()
    for i, t in enumerate(times, 1):
        print(f"run {i}: {t:.2f} s")
    print(f"median {statistics.median(times):.2f} s, range {min(times):.2f}-{max(times):.2f} s")


if __name__ == "__main__":
    main()
