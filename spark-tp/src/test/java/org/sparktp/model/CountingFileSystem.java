package org.sparktp.model;

import java.io.IOException;
import java.net.URI;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FSInputStream;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RawLocalFileSystem;

/**
 * A local file system under the scheme {@code counting:} that counts the bytes and read calls made
 * through its input streams, to check what a reader asks of a (remote) file system.
 */
public class CountingFileSystem extends RawLocalFileSystem {
  static final AtomicLong BYTES = new AtomicLong();
  static final AtomicLong READS = new AtomicLong();

  /** A configuration that maps {@code counting:} paths to this class. */
  static Configuration conf() {
    Configuration conf = new Configuration();
    conf.set("fs.counting.impl", CountingFileSystem.class.getName());
    conf.setBoolean("fs.counting.impl.disable.cache", true);
    return conf;
  }

  static void reset() {
    BYTES.set(0);
    READS.set(0);
  }

  @Override
  public URI getUri() {
    return URI.create("counting:///");
  }

  @Override
  public String getScheme() {
    return "counting";
  }

  @Override
  public FSDataInputStream open(Path f, int bufferSize) throws IOException {
    return new FSDataInputStream(new Counting(super.open(f, bufferSize)));
  }

  private static final class Counting extends FSInputStream {
    private final FSDataInputStream in;

    Counting(FSDataInputStream in) {
      this.in = in;
    }

    private int count(int n) {
      if (n > 0) {
        BYTES.addAndGet(n);
      }
      READS.incrementAndGet();
      return n;
    }

    @Override
    public void seek(long pos) throws IOException {
      in.seek(pos);
    }

    @Override
    public long getPos() throws IOException {
      return in.getPos();
    }

    @Override
    public boolean seekToNewSource(long targetPos) throws IOException {
      return in.seekToNewSource(targetPos);
    }

    @Override
    public int read() throws IOException {
      int b = in.read();
      count(b < 0 ? 0 : 1);
      return b;
    }

    @Override
    public int read(byte[] b, int off, int len) throws IOException {
      return count(in.read(b, off, len));
    }

    @Override
    public int read(long position, byte[] buffer, int offset, int length) throws IOException {
      return count(in.read(position, buffer, offset, length));
    }

    @Override
    public void readFully(long position, byte[] buffer, int offset, int length) throws IOException {
      in.readFully(position, buffer, offset, length);
      count(length);
    }

    @Override
    public void readFully(long position, byte[] buffer) throws IOException {
      readFully(position, buffer, 0, buffer.length);
    }

    @Override
    public void close() throws IOException {
      in.close();
    }
  }
}
