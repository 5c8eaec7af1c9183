#!/usr/bin/env python3
"""Peak RSS of a sync node under N concurrent large uploads (the issue's "20 concurrent 1 GB").

usage: upload_memory.py SYNC_NODE_BIN [--uploads 20] [--mib 1024] [--data DIR]

Starts `sync-node serve` on loopback with a fresh data directory, signs up an admin, creates an
API key, then streams N distinct multipart uploads of MIB MiB each (chunked transfer encoding,
generated on the fly: nothing is buffered on the client side) at the same time, sampling the
node's RSS from /proc every 50 ms. Prints and writes JSON. Bounded: N uploads, one pass.
"""
import argparse, http.client, json, os, shutil, subprocess, sys, tempfile, threading, time, socket

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def call(port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    h = {"content-type": "application/json"}
    h.update(headers or {})
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse(); data = r.read(); c.close()
    return r.status, (json.loads(data) if data else None)

def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0

def upload(port, key, i, mib, results):
    boundary = "tesseraboundary%d" % i
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"deviceAssetId\"\r\n\r\nload-{i}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"assetData\"; filename=\"load-{i}.mp4\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
    c.putrequest("POST", "/api/assets")
    c.putheader("x-api-key", key)
    c.putheader("content-type", f"multipart/form-data; boundary={boundary}")
    c.putheader("transfer-encoding", "chunked")
    c.endheaders()
    def send(b):
        c.send(b"%x\r\n" % len(b) + b + b"\r\n")
    send(head)
    # A unique first block, then zeros: distinct BLAKE3 per upload, cheap to generate.
    send(("upload %d " % i).encode().ljust(1 << 16, b"\0"))
    block = b"\0" * (1 << 20)
    for _ in range(mib - 1):
        send(block)
    send(b"\0" * ((1 << 20) - (1 << 16)))
    send(tail)
    c.send(b"0\r\n\r\n")
    r = c.getresponse(); body = r.read(); c.close()
    results[i] = (r.status, body[:200].decode(errors="replace"))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin"); ap.add_argument("--uploads", type=int, default=20)
    ap.add_argument("--mib", type=int, default=1024); ap.add_argument("--data")
    ap.add_argument("--json")
    a = ap.parse_args()
    tmp = a.data or tempfile.mkdtemp(prefix="tessera-upload-mem-")
    port = free_port()
    log = open(os.path.join(tmp, "node.log"), "w")
    node = subprocess.Popen([a.bin, "serve", "--data", os.path.join(tmp, "data"), "--listen", f"127.0.0.1:{port}",
                             "--iroh", "127.0.0.1:0", "--relay", "127.0.0.1:0", "--jobs-paused"], stdout=log, stderr=log)
    try:
        for _ in range(300):
            try:
                if call(port, "GET", "/api/server/ping")[0] == 200: break
            except OSError: pass
            time.sleep(0.1)
        call(port, "POST", "/api/auth/admin-sign-up", {"email": "a@example.com", "password": "load test pw", "name": "A"})
        _, login = call(port, "POST", "/api/auth/login", {"email": "a@example.com", "password": "load test pw"})
        _, key = call(port, "POST", "/api/api-keys", {"name": "load", "permissions": ["all"]},
                      {"authorization": "Bearer " + login["accessToken"]})
        idle = rss_kib(node.pid)
        results = {}
        threads = [threading.Thread(target=upload, args=(port, key["secret"], i, a.mib, results)) for i in range(a.uploads)]
        peak, stop = [idle], threading.Event()
        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kib(node.pid)); time.sleep(0.05)
        s = threading.Thread(target=sample); s.start()
        t0 = time.time()
        for t in threads: t.start()
        for t in threads: t.join()
        secs = time.time() - t0
        stop.set(); s.join()
        ok = sum(1 for v in results.values() if v[0] == 201)
        out = {"uploads": a.uploads, "mib_each": a.mib, "created": ok, "seconds": round(secs, 1),
               "mib_per_s": round(a.uploads * a.mib / secs, 1),
               "idle_rss_mib": round(idle / 1024, 1), "peak_rss_mib": round(peak[0] / 1024, 1)}
        print(json.dumps(out))
        if a.json:
            open(a.json, "w").write(json.dumps(out, indent=2))
        if ok != a.uploads:
            print("not all uploads were created:", results, file=sys.stderr); sys.exit(1)
    finally:
        node.kill(); node.wait()
        if not a.data:
            shutil.rmtree(tmp, ignore_errors=True)

if __name__ == "__main__":
    main()
