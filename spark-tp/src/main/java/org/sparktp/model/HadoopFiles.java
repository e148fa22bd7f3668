package org.sparktp.model;

import java.io.IOException;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.ChecksumFileSystem;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

/**
 * Creates model files through Hadoop's {@link FileSystem}. On a checksummed file system (the local
 * {@code file:} one) the file is written without the hidden {@code .name.crc} side file, and a stale one
 * is removed: model directories are meant to be edited by hand ({@code config.json}) and copied by other
 * tools, and a side file that no longer matches would make every later read fail with a checksum error.
 */
final class HadoopFiles {
  private HadoopFiles() {}

  /** Creates (or replaces) {@code path} for writing. */
  static FSDataOutputStream create(Path path, Configuration conf) throws IOException {
    FileSystem fs = path.getFileSystem(conf);
    if (fs instanceof ChecksumFileSystem checked) {
      Path crc = checked.getChecksumFile(path);
      FileSystem raw = checked.getRawFileSystem();
      if (raw.exists(crc) && !raw.delete(crc, false)) {
        throw new IOException("Cannot replace " + path + ": cannot delete its stale checksum file " + crc);
      }
      return raw.create(path, true);
    }
    return fs.create(path, true);
  }
}
