// Reads the golden records in schemas/testdata with Apache Avro for Java.
//
// Needs org.apache.avro:avro (1.12.2 was used) on the class path; run from
// the repository root:
//
//   javac -cp "$CP" -d /tmp/out schemas/testdata/interop/Check.java
//   java -cp "/tmp/out:$CP" Check schemas
//
// For every kind it compares Java's parsing fingerprint of the .avsc with the
// single-object header, decodes the record with BinaryMessageDecoder (which
// finds the schema by that fingerprint), re-encodes it with
// BinaryMessageEncoder into /tmp/<kind>.java.bin (for the Go side to read
// back) and says whether the bytes are the same (they differ where a map's
// entries come out in another order). It exits non-zero on a mismatch.

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;

public class Check {
  public static void main(String[] args) throws Exception {
    String root = args.length > 0 ? args[0] : "schemas";
    boolean failed = false;
    for (String kind : new String[] {"request", "task", "manifest", "result", "reply"}) {
      Schema schema = new Schema.Parser().parse(Path.of(root, kind + ".avsc").toFile());
      long fp = SchemaNormalization.parsingFingerprint64(schema);
      byte[] record = Files.readAllBytes(Path.of(root, "testdata", kind + ".bin"));
      long header = ByteBuffer.wrap(record, 2, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
      System.out.printf("%s: Java fingerprint %016x, header %016x: %s%n", kind, fp, header, fp == header ? "match" : "MISMATCH");
      failed |= fp != header;
      GenericRecord r = new BinaryMessageDecoder<GenericRecord>(GenericData.get(), schema).decode(record);
      byte[] again = new BinaryMessageEncoder<GenericRecord>(GenericData.get(), schema).encode(r).array();
      Files.write(Path.of("/tmp", kind + ".java.bin"), again);
      System.out.printf("  decoded; re-encoded to the same bytes: %b%n", Arrays.equals(record, again));
    }
    System.exit(failed ? 1 : 0);
  }
}
