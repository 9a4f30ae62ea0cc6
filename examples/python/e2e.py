#!/usr/bin/env python3
"""End-to-end test of processor.py against the Go pipeline (make python-processor).

Starts the embedded broker (scattergather broker), the topics, a scatterer and
an aggregator on examples/python/routes.json, whose routes no Go processor
serves, then processor.py on them, and checks what comes back:

  text (split, json-array), exactly-once: a COMPLETE reply with the Python
      answers; a PARTIAL one whose bad element is an ERROR part
  shout (broadcast, recipient py), at-least-once: a COMPLETE reply
  a record that is not a Task, on tasks.text: dead-lettered (sg-dlq-* headers)
  a Task already past its deadline, written by hand: an EXPIRED Result on
      results, keyed by the correlation id, header sg-type: result
  the text processor restarted at-least-once (same group): COMPLETE again

  e2e.py --bin bin/scattergather     (run with the virtualenv's python)
Prints 'N passed, N failed' last; exits 1 on any failure.
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone

from confluent_kafka import Consumer, Producer, TopicPartition

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import processor as pyproc  # noqa: E402  (its Schema and decode)

ROUTES = os.path.join(HERE, "routes.json")
SCHEMAS = os.path.join(HERE, "..", "..", "schemas")
PREFIX = "sg."

passed, failed = [], []
procs = []


def check(name, ok, detail=""):
    (passed if ok else failed).append(name)
    print(f"--- {'PASS' if ok else 'FAIL'}: {name}" + ("" if ok else f"\n    {detail}"), flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, args, logdir):
    log = open(os.path.join(logdir, name + ".log"), "w+")
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    procs.append((name, p, log))
    return p, log


def wait_for(what, cond, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.1)
    raise SystemExit(f"e2e: timed out after {timeout}s waiting for {what}")


def ready(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def log_has(log, text):
    log.flush()
    with open(log.name) as f:
        return text in f.read()


def assigned(log):
    """processor.py logged an assignment of at least one partition."""
    with open(log.name) as f:
        return re.search(r"partitions assigned .*partitions=\[\d", f.read()) is not None


def start_processor(py, brokers, route, guarantee, instance, logdir, recipient=""):
    name = f"processor-{route}-{guarantee}"
    args = [py, os.path.join(HERE, "processor.py"), "--brokers", brokers, "--route", route,
            "--guarantee", guarantee, "--instance-id", instance]
    if recipient:
        args += ["--recipient", recipient]
    p, log = start(name, args, logdir)
    wait_for(f"{name} to be assigned its partitions", lambda: assigned(log) or p.poll() is not None)
    if p.poll() is not None:
        raise SystemExit(f"e2e: {name} exited with {p.returncode}")
    return p, log


def request(sg, brokers, route, payload):
    """scattergather request; returns (exit status, reply as a dict)."""
    out = subprocess.run([sg, "request", "--brokers", brokers, "--route", route, "--timeout", "10s",
                          "--payload", json.dumps(payload)], capture_output=True, text=True, timeout=60)
    try:
        return out.returncode, json.loads(out.stdout)
    except ValueError:
        return out.returncode, {"stdout": out.stdout, "stderr": out.stderr}


def find_record(brokers, topic, match, timeout=15):
    """Reads topic from the start (read_committed) until match(msg) holds."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": "e2e-reader", "enable.auto.commit": False,
                  "isolation.level": "read_committed", "enable.metrics.push": False})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, p, 0) for p in parts])  # offset 0: the beginning
    try:
        end = time.time() + timeout
        while time.time() < end:
            m = c.poll(0.5)
            if m is not None and m.error() is None and match(m):
                return m
        return None
    finally:
        c.close()


def headers(msg):
    return {k: v.decode() for k, v in msg.headers() or []}


def expected(*texts):
    return [{"text": t, "upper": t.upper(), "words": len(t.split())} for t in texts]


def run(sg, py, logdir):
    p, blog = start("broker", [sg, "broker", "--broker-addr", "127.0.0.1:0", "--data-dir", ""], logdir)
    wait_for("the broker's address", lambda: log_has(blog, "127.0.0.1:"))
    with open(blog.name) as f:
        brokers = f.readline().strip()
    print(f"e2e: broker on {brokers}, logs in {logdir}", flush=True)
    subprocess.run([sg, "topics", "--brokers", brokers, "--routes-file", ROUTES], check=True, capture_output=True)
    for role in ("scatterer", "aggregator"):
        port = free_port()
        start(role, [sg, role, "--brokers", brokers, "--routes-file", ROUTES, "--metrics-addr", f"127.0.0.1:{port}",
                     "--instance-id", f"e2e-{role}"], logdir)
        wait_for(f"the {role} to be ready", lambda: ready(f"http://127.0.0.1:{port}/readyz"))

    eos, _ = start_processor(py, brokers, "text", "exactly-once", "py-eos", logdir)
    start_processor(py, brokers, "shout", "at-least-once", "py-shout", logdir, recipient="py")

    rc, r = request(sg, brokers, "text", ["hello world", "scatter gather in python"])
    check("text, exactly-once: COMPLETE with the Python answers",
          rc == 0 and r.get("status") == "COMPLETE" and r.get("payload") == expected("hello world", "scatter gather in python")
          and all(pt["status"] == "OK" and pt["processor_id"] == "py-eos" for pt in r["parts"]), f"exit {rc}: {r}")
    print(f"    reply: {r.get('status')} {json.dumps(r.get('payload'))}")

    rc, r = request(sg, brokers, "text", ["fine", 42])
    parts = {pt["part_id"]: pt for pt in r.get("parts", [])}
    check("text, bad element: PARTIAL, item-1 ERROR, item-0 OK",
          rc == 3 and r.get("status") == "PARTIAL" and parts.get("item-0", {}).get("status") == "OK"
          and parts.get("item-1", {}).get("status") == "ERROR"
          and "want a JSON string" in parts["item-1"].get("error", "") and r.get("payload") == expected("fine"),
          f"exit {rc}: {r}")
    print(f"    reply: {r.get('status')} {r.get('error')}")

    rc, r = request(sg, brokers, "shout", {"text": "broadcast me"})
    check("shout, broadcast to recipient py, at-least-once: COMPLETE",
          rc == 0 and r.get("status") == "COMPLETE" and r.get("payload") == expected("broadcast me")
          and [pt["part_id"] for pt in r["parts"]] == ["py"], f"exit {rc}: {r}")

    # A record that is not a Task: dead-lettered, and the processor goes on.
    prod = Producer({"bootstrap.servers": brokers, "partitioner": "murmur2_random", "enable.metrics.push": False})
    prod.produce(f"{PREFIX}tasks.text", key=b"e2e-garbage", value=b"not avro at all", headers=[("sg-type", b"task")])
    # A Task whose deadline has passed, as the scatterer would write it: answered EXPIRED.
    task_schema = pyproc.Schema(SCHEMAS, "task")
    now = datetime.now(timezone.utc)
    prod.produce(f"{PREFIX}tasks.text", key=b"item-0", headers=[("sg-type", b"task")], value=task_schema.encode({
        "correlation_id": "e2e-expired", "part_id": "item-0", "part_count": 1, "route": "text",
        "payload": b'"too late"', "content_type": "application/json", "deadline": now - timedelta(seconds=1),
        "attempt": 1, "submitted_at": now - timedelta(seconds=2), "headers": {}}))
    prod.flush(10)
    dl = find_record(brokers, f"{PREFIX}dlq", lambda m: m.key() == b"e2e-garbage")
    h = headers(dl) if dl else {}
    check("a record that is not a Task: dead-lettered by the processor, reason not-avro",
          dl is not None and dl.value() == b"not avro at all" and h.get("sg-dlq-role") == "processor"
          and h.get("sg-dlq-reason") == "not-avro" and h.get("sg-dlq-topic") == f"{PREFIX}tasks.text"
          and h.get("sg-type") == "task", f"dead letter: {h}")

    result_schema = pyproc.Schema(SCHEMAS, "result")
    res = find_record(brokers, f"{PREFIX}results", lambda m: m.key() == b"e2e-expired")
    got = pyproc.decode(res.value(), result_schema, []) if res else {}
    check("a Task past its deadline: an EXPIRED Result, keyed by correlation id, sg-type: result",
          res is not None and got.get("status") == "EXPIRED" and got.get("part_id") == "item-0"
          and got.get("correlation_id") == "e2e-expired" and got.get("attempt") == 1
          and headers(res).get("sg-type") == "result" and len(headers(res).get("traceparent", "")) == 55,
          f"result: {got} headers {headers(res) if res else None}")

    # The same group at-least-once, after a clean stop of the exactly-once one.
    eos.terminate()
    eos.wait(timeout=20)
    check("processor stops cleanly on SIGTERM (exit 0)", eos.returncode == 0, f"exit {eos.returncode}")
    start_processor(py, brokers, "text", "at-least-once", "py-alo", logdir)
    rc, r = request(sg, brokers, "text", ["at least once", "twice"])
    check("text, at-least-once: COMPLETE with the Python answers",
          rc == 0 and r.get("status") == "COMPLETE" and r.get("payload") == expected("at least once", "twice")
          and all(pt["processor_id"] == "py-alo" for pt in r["parts"]), f"exit {rc}: {r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "..", "bin", "scattergather"))
    args = ap.parse_args()
    logdir = tempfile.mkdtemp(prefix="sg-python-e2e-")
    t0 = time.time()
    try:
        run(os.path.abspath(args.bin), sys.executable, logdir)
    except (SystemExit, Exception) as e:
        failed.append(f"setup: {e}")
        print(f"--- FAIL: {e}", flush=True)
    finally:
        for name, p, log in reversed(procs):  # processors first, the broker last
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
            log.close()
    if failed:
        for name, _, log in procs:
            with open(log.name) as f:
                print(f"===== {name} log (last 30 lines)\n" + "".join(f.readlines()[-30:]), flush=True)
    print(f"e2e: {time.time() - t0:.1f}s")
    print(f"python-processor: {len(passed)} passed, {len(failed)} failed")
    sys.exit(1 if failed or not passed else 0)


if __name__ == "__main__":
    main()
