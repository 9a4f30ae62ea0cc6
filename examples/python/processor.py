#!/usr/bin/env python3
"""A scattergather processor in Python (docs/protocol.md, "A processor").

It serves one route: reads the route's tasks, answers each with one Result
on the results topic (keyed by correlation id), dead-letters tasks it cannot
decode, and commits what it read:

  exactly-once   results and consumed offsets in one Kafka transaction
  at-least-once  results produced and acknowledged, then offsets committed

The work: a task's payload is a JSON string (or {"text": "..."}); the answer
is {"text": ..., "upper": ..., "words": N}. Anything else is answered ERROR.

  python processor.py --brokers 127.0.0.1:9092 --route text
  python processor.py --route shout --recipient py    # a broadcast route
"""

import argparse
import io
import json
import os
import signal
import socket
import sys
from datetime import datetime, timezone

import fastavro
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from fastavro.schema import fingerprint, to_parsing_canonical_form

HERE = os.path.dirname(os.path.abspath(__file__))
MAGIC = b"\xc3\x01"
MAX_RESULT_BYTES = 999_887 - 4096  # processor.MaxResultBytes
MAX_ERROR_LEN = 1024  # the Go processor cuts a result's error there too


def log(msg, **kv):
    fields = " ".join(f"{k}={v}" for k, v in kv.items())
    print(f"processor.py: {msg} {fields}".rstrip(), file=sys.stderr, flush=True)


# --- records: Avro single-object encoding ---------------------------------


class Schema:
    """One .avsc file and the CRC-64-AVRO fingerprint of its canonical form."""

    def __init__(self, schemas_dir, kind):
        with open(os.path.join(schemas_dir, kind + ".avsc")) as f:
            self.avro = fastavro.parse_schema(json.load(f))
        canonical = to_parsing_canonical_form(self.avro)
        # fastavro returns the 8 bytes in the order of the header (little endian).
        self.fingerprint = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
        self.kind = kind

    def encode(self, record):
        buf = io.BytesIO()
        buf.write(MAGIC + self.fingerprint)
        fastavro.schemaless_writer(buf, self.avro, record)
        return buf.getvalue()


class DecodeError(Exception):
    def __init__(self, reason, msg):
        super().__init__(f"{reason}: {msg}")
        self.reason = reason  # goes into the sg-dlq-reason header, as Go's


def decode(value, schema, others):
    """Decodes value as a record of schema; the reasons are the Go decoders'."""
    if value is None or len(value) < 10 or value[:2] != MAGIC:
        raise DecodeError("not-avro", "no Avro single-object header")
    fp = value[2:10]
    if fp != schema.fingerprint:
        kind = next((s.kind for s in others if s.fingerprint == fp), None)
        if kind:
            raise DecodeError("wrong-schema", f"a {kind} record, want a {schema.kind}")
        raise DecodeError("unknown-schema", f"fingerprint {fp.hex()} is not the {schema.kind} schema's")
    buf = io.BytesIO(value[10:])
    try:
        record = fastavro.schemaless_reader(buf, schema.avro, None)
    except Exception as e:  # truncated, an index out of range, bad UTF-8...
        raise DecodeError("malformed", f"{type(e).__name__}: {e}") from None
    if buf.read(1):
        raise DecodeError("malformed", "trailing bytes after the record")
    return record


# --- the work ----------------------------------------------------------------


class BadInput(Exception):
    """Input no retry can fix: the part is answered ERROR."""


def handle(task):
    """The handler: returns the part's payload (bytes) or raises BadInput."""
    try:
        data = json.loads(task["payload"])
    except ValueError as e:
        raise BadInput(f"payload is not JSON: {e}") from None
    text = data.get("text") if isinstance(data, dict) else data
    if not isinstance(text, str):
        raise BadInput(f'want a JSON string or {{"text": string}}, got {json.dumps(data)[:100]}')
    return json.dumps({"text": text, "upper": text.upper(), "words": len(text.split())}).encode()


# --- the processor ---------------------------------------------------------


def header(msg, key):
    value = None
    for k, v in msg.headers() or []:
        if k == key:
            value = v  # the last one wins, as kafka.Header in Go
    return value


def child_traceparent(parent):
    """A traceparent for our span: the task's trace with a new span id."""
    parts = parent.decode("ascii", "replace").split("-") if parent else []
    if len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16 and parts[1] != "0" * 32:
        return f"00-{parts[1]}-{os.urandom(8).hex()}-{parts[3]}"
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


class Processor:
    def __init__(self, args):
        self.args = args
        schemas_dir = args.schemas
        kinds = ("request", "task", "manifest", "result", "reply")
        all_schemas = {k: Schema(schemas_dir, k) for k in kinds}
        self.task_schema, self.result_schema = all_schemas["task"], all_schemas["result"]
        self.other_schemas = [s for k, s in all_schemas.items() if k != "task"]
        prefix = args.topic_prefix
        self.tasks_topic = f"{prefix}tasks.{args.route}"
        self.results_topic = f"{prefix}results"
        self.dlq_topic = f"{prefix}dlq"
        self.group = f"{prefix}processor.{args.route}" + (f".{args.recipient}" if args.recipient else "")
        self.exactly_once = args.guarantee == "exactly-once"
        self.stopping = False
        self.counts = {"OK": 0, "ERROR": 0, "EXPIRED": 0, "dead-lettered": 0, "skipped": 0}

        self.consumer = Consumer({
            "bootstrap.servers": args.brokers,
            "group.id": self.group,
            "isolation.level": "read_committed",  # never see an aborted or open transaction's tasks
            "enable.auto.commit": False,  # we commit: in the transaction, or after the acks
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000,
            # What the Go roles offer: a Go processor and this one can then
            # share a group (librdkafka's default, range,roundrobin, cannot:
            # INCONSISTENT_GROUP_PROTOCOL).
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.metrics.push": False,
        })
        producer = {
            "bootstrap.servers": args.brokers,
            # The results of a request must land on its manifest's partition:
            # the Java/franz-go partitioner (murmur2), not librdkafka's default
            # (consistent_random, a CRC32 of the key).
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "linger.ms": 5,
            "enable.metrics.push": False,
        }
        if self.exactly_once:
            producer["transactional.id"] = f"{self.group}-{args.instance_id}"
        self.producer = Producer(producer)
        if self.exactly_once:
            self.producer.init_transactions(30)  # fences our predecessor, aborts what it left open

    # One task record -> its result (or dead letter, or None: not ours).
    def answer(self, msg):
        try:
            task = decode(msg.value(), self.task_schema, self.other_schemas)
        except DecodeError as e:
            return self.dead_letter(msg, e.reason, str(e))
        if task["part_id"] == "":  # a broadcast task: we answer as our recipient
            if not self.args.recipient:
                return self.dead_letter(msg, "no-part-id", f"task {task['correlation_id']} has no part id and no --recipient")
            known = header(msg, "sg-recipients")
            if known is not None and self.args.recipient not in known.decode().split(","):
                self.counts["skipped"] += 1  # the aggregator expects no part from us
                return None
            task["part_id"] = self.args.recipient
        started = datetime.now(timezone.utc)
        status, payload, error = "OK", b"", ""
        if started >= task["deadline"]:
            status, error = "EXPIRED", f"deadline {task['deadline'].isoformat()} passed before the task was picked up"
        else:
            try:
                payload = handle(task)
            except BadInput as e:
                status, error = "ERROR", str(e)
            except Exception as e:  # a bug in the handler: the part fails, the processor goes on
                status, error = "ERROR", f"{type(e).__name__}: {e}"
            if status == "ERROR" and datetime.now(timezone.utc) >= task["deadline"]:
                status = "EXPIRED"  # past the deadline the answer is no longer awaited
        result = {
            "correlation_id": task["correlation_id"],
            "part_id": task["part_id"],
            "route": task["route"] or self.args.route,
            "status": status,
            "payload": payload,
            "error": error[:MAX_ERROR_LEN],
            "processor_id": self.args.instance_id,
            "attempt": task["attempt"],  # 2 for a hedged task
            "tries": 1,
            "started_at": started,
            "finished_at": datetime.now(timezone.utc),
            "deadline": task["deadline"],  # copied: bounds how long the aggregator holds an early result
        }
        value = self.result_schema.encode(result)
        if len(value) > MAX_RESULT_BYTES:
            result.update(status="ERROR", payload=b"", error=f"result-too-large: {len(value)} bytes")
            value = self.result_schema.encode(result)
        self.counts[status] += 1
        headers = [("sg-type", b"result"), ("traceparent", child_traceparent(header(msg, "traceparent")).encode())]
        return dict(topic=self.results_topic, key=task["correlation_id"].encode(), value=value, headers=headers)

    def dead_letter(self, msg, reason, error):
        log("task dead-lettered", partition=msg.partition(), offset=msg.offset(), reason=reason)
        self.counts["dead-lettered"] += 1
        headers = list(msg.headers() or []) + [
            ("sg-dlq-topic", msg.topic().encode()),
            ("sg-dlq-partition", str(msg.partition()).encode()),
            ("sg-dlq-offset", str(msg.offset()).encode()),
            ("sg-dlq-role", b"processor"),
            ("sg-dlq-reason", reason.encode()),
            ("sg-dlq-error", error.encode()),
        ]
        return dict(topic=self.dlq_topic, key=msg.key(), value=msg.value(), headers=headers)

    # One polled batch: answer every task, then commit under the guarantee.
    def process(self, msgs):
        outputs = [out for out in map(self.answer, msgs) if out is not None]
        nexts = {}  # (topic, partition) -> the offset to commit: the last consumed + 1
        for m in msgs:
            nexts[(m.topic(), m.partition())] = m.offset() + 1
        offsets = [TopicPartition(t, p, o) for (t, p), o in nexts.items()]
        if self.exactly_once:
            self.producer.begin_transaction()
            for out in outputs:
                self.producer.produce(**out)
            self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(), 30)
            self.producer.commit_transaction(30)
        else:
            failed = []
            for out in outputs:
                self.producer.produce(**out, on_delivery=lambda err, _msg: err and failed.append(err))
            if self.producer.flush(30) > 0 or failed:
                raise KafkaException(failed[0] if failed else KafkaError(KafkaError._TIMED_OUT))
            self.consumer.commit(offsets=offsets, asynchronous=False)  # only after every result is acked

    def rewind(self, msgs):
        """Seeks back to the batch's first records: they are consumed again."""
        first = {}
        for m in msgs:
            first.setdefault((m.topic(), m.partition()), m.offset())
        for (t, p), o in first.items():
            try:
                self.consumer.seek(TopicPartition(t, p, o))
            except KafkaException:
                pass  # no longer ours: the new owner reads from the committed offset

    def run(self):
        def assigned(_consumer, parts):
            log("partitions assigned", group=self.group, topic=self.tasks_topic, partitions=[p.partition for p in parts])

        self.consumer.subscribe([self.tasks_topic], on_assign=assigned)
        log("starting", route=self.args.route, group=self.group, guarantee=self.args.guarantee,
            instance=self.args.instance_id)
        while not self.stopping:
            first = self.consumer.poll(0.5)  # wait for one record, then take what is buffered
            if first is None:
                continue
            msgs = []
            for m in [first] + self.consumer.consume(num_messages=499, timeout=0):
                err = m.error()
                if err is None:
                    msgs.append(m)
                elif err.fatal():
                    raise KafkaException(err)
                elif err.code() != KafkaError._PARTITION_EOF:
                    log("consumer error", err=err)
            if not msgs:
                continue
            try:
                self.process(msgs)
            except KafkaException as e:
                err = e.args[0]
                if err.fatal():
                    raise  # e.g. fenced by a newer instance with our transactional id
                if self.exactly_once:
                    self.producer.abort_transaction(30)  # nothing of the batch is committed
                log("batch not committed; consuming it again", err=err)
                self.rewind(msgs)
        self.consumer.close()  # leaves the group
        log("stopped", **self.counts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    env = os.environ.get
    ap.add_argument("--brokers", default=env("SG_BROKERS", "127.0.0.1:9092"))
    ap.add_argument("--topic-prefix", default=env("SG_TOPIC_PREFIX", "sg."))
    ap.add_argument("--route", default=env("SG_ROUTE"), required=not env("SG_ROUTE"))
    ap.add_argument("--recipient", default=env("SG_RECIPIENT", ""), help="broadcast routes: the part id we answer as")
    ap.add_argument("--guarantee", default=env("SG_GUARANTEE", "exactly-once"), choices=["exactly-once", "at-least-once"])
    ap.add_argument("--instance-id", default=env("SG_INSTANCE_ID", f"{socket.gethostname()}-py-{os.getpid()}"),
                    help="stable per instance: part of the transactional id")
    ap.add_argument("--schemas", default=os.path.join(HERE, "..", "..", "schemas"), help="the directory of the .avsc files")
    args = ap.parse_args()
    p = Processor(args)

    def stop(*_):
        p.stopping = True  # the batch in flight finishes and commits first

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    p.run()


if __name__ == "__main__":
    main()
