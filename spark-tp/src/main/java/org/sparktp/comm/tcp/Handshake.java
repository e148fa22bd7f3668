package org.sparktp.comm.tcp;

import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.security.SecureRandom;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/**
 * Mutual HMAC-SHA256 challenge–response, run on every connection before any data. The connecting rank
 * (client, the higher rank) and the accepting rank (server) each send a fresh 32-byte nonce; each proves
 * knowledge of the shared secret by an HMAC over both nonces, both ranks, the group size and the group
 * tag, with a different label per direction so that one side's proof cannot be replayed as the other's.
 * The secret itself never travels.
 *
 * <pre>
 * client -> server  HELLO     magic "TPH1", version, clientRank, size, clientNonce[32]       (48 B)
 * server -> client  CHALLENGE magic "TPC1", serverRank, serverNonce[32], serverMac[32]      (72 B)
 * client -> server  RESPONSE  magic "TPR1", clientMac[32]                                   (36 B)
 * server -> client  ACCEPT    magic "TPA1"                                                   (4 B)
 * </pre>
 *
 * Every message has a fixed length and a magic number; anything else fails the handshake, which closes
 * the connection.
 */
final class Handshake {
  private Handshake() {}

  static final int VERSION = 1;
  static final int HELLO = 0x54504831; // "TPH1"
  static final int CHALLENGE = 0x54504331; // "TPC1"
  static final int RESPONSE = 0x54505231; // "TPR1"
  static final int ACCEPT = 0x54504131; // "TPA1"
  static final int NONCE = 32;
  static final int MAC = 32;

  private static final SecureRandom RANDOM = new SecureRandom();

  /** The handshake failed; the message says why, for the log or the caller. */
  static final class Rejected extends Exception {
    private static final long serialVersionUID = 1L;

    Rejected(String message) {
      super(message);
    }

    Rejected(String message, Throwable cause) {
      super(message, cause);
    }
  }

  /** What the server learnt: the authenticated rank of the client. */
  static int serve(SocketChannel ch, int serverRank, int size, TcpOptions opts, int timeoutMillis)
      throws Rejected, IOException {
    ch.socket().setSoTimeout(timeoutMillis);
    DataInputStream in = new DataInputStream(ch.socket().getInputStream());
    int magic = readInt(in, "HELLO");
    if (magic != HELLO) {
      throw new Rejected("not a spark-tp peer: first 4 bytes were 0x" + Integer.toHexString(magic)
          + ", expected the HELLO magic 0x" + Integer.toHexString(HELLO));
    }
    int version = readInt(in, "HELLO");
    int clientRank = readInt(in, "HELLO");
    int clientSize = readInt(in, "HELLO");
    if (version != VERSION) {
      throw new Rejected("protocol version " + version + ", this rank speaks " + VERSION);
    }
    if (clientSize != size) {
      throw new Rejected("peer claims a group of " + clientSize + " ranks, this group has " + size);
    }
    if (clientRank <= serverRank || clientRank >= size) {
      throw new Rejected("peer claims rank " + clientRank + ", but rank " + serverRank
          + " only accepts connections from ranks in (" + serverRank + ", " + size + ")");
    }
    byte[] clientNonce = readBytes(in, NONCE, "HELLO");
    byte[] serverNonce = nonce();
    byte[] serverMac = mac(opts, "spark-tp server", size, clientRank, serverRank, clientNonce, serverNonce);
    ByteBuffer out = ByteBuffer.allocate(72);
    out.putInt(CHALLENGE).putInt(serverRank).put(serverNonce).put(serverMac).flip();
    writeFully(ch, out);
    int rmagic = readInt(in, "RESPONSE");
    if (rmagic != RESPONSE) {
      throw new Rejected("claimed rank " + clientRank + " sent 0x" + Integer.toHexString(rmagic)
          + " instead of the RESPONSE magic");
    }
    byte[] clientMac = readBytes(in, MAC, "RESPONSE");
    byte[] expected = mac(opts, "spark-tp client", size, clientRank, serverRank, serverNonce, clientNonce);
    if (!MessageDigest.isEqual(clientMac, expected)) {
      throw new Rejected("claimed rank " + clientRank + " failed authentication: its HMAC does not match the "
          + "shared secret (a different secret or group tag, or not a peer of this group)");
    }
    ByteBuffer ok = ByteBuffer.allocate(4).putInt(ACCEPT).flip();
    writeFully(ch, ok);
    ch.socket().setSoTimeout(0);
    return clientRank;
  }

  /** Runs the client side against {@code serverRank}; returns normally once both sides are authenticated. */
  static void connect(SocketChannel ch, int clientRank, int serverRank, int size, TcpOptions opts, int timeoutMillis)
      throws Rejected, IOException {
    ch.socket().setSoTimeout(timeoutMillis);
    DataInputStream in = new DataInputStream(ch.socket().getInputStream());
    byte[] clientNonce = nonce();
    ByteBuffer hello = ByteBuffer.allocate(48);
    hello.putInt(HELLO).putInt(VERSION).putInt(clientRank).putInt(size).put(clientNonce).flip();
    writeFully(ch, hello);
    int magic;
    try {
      magic = readInt(in, "CHALLENGE");
    } catch (Rejected e) {
      throw new Rejected("the peer closed the connection before answering (" + e.getMessage()
          + "): it is not a spark-tp rank of this group, or it refused our HELLO", e);
    }
    if (magic != CHALLENGE) {
      throw new Rejected("the peer answered 0x" + Integer.toHexString(magic) + " instead of the CHALLENGE magic: "
          + "something else listens at that address");
    }
    int peerRank = readInt(in, "CHALLENGE");
    if (peerRank != serverRank) {
      throw new Rejected("the peer says it is rank " + peerRank + ", expected rank " + serverRank);
    }
    byte[] serverNonce = readBytes(in, NONCE, "CHALLENGE");
    byte[] serverMac = readBytes(in, MAC, "CHALLENGE");
    byte[] expected = mac(opts, "spark-tp server", size, clientRank, serverRank, clientNonce, serverNonce);
    if (!MessageDigest.isEqual(serverMac, expected)) {
      throw new Rejected("rank " + serverRank + " failed authentication: its HMAC does not match our shared "
          + "secret (the ranks were given different secrets or group tags)");
    }
    byte[] clientMac = mac(opts, "spark-tp client", size, clientRank, serverRank, serverNonce, clientNonce);
    ByteBuffer resp = ByteBuffer.allocate(36).putInt(RESPONSE).put(clientMac).flip();
    writeFully(ch, resp);
    int ack;
    try {
      ack = readInt(in, "ACCEPT");
    } catch (Rejected e) {
      throw new Rejected("rank " + serverRank + " refused our authentication (" + e.getMessage()
          + "): the ranks were given different secrets or group tags", e);
    }
    if (ack != ACCEPT) {
      throw new Rejected("rank " + serverRank + " answered 0x" + Integer.toHexString(ack) + " instead of ACCEPT");
    }
    ch.socket().setSoTimeout(0);
  }

  private static byte[] nonce() {
    byte[] n = new byte[NONCE];
    RANDOM.nextBytes(n);
    return n;
  }

  static byte[] mac(TcpOptions opts, String label, int size, int clientRank, int serverRank, byte[] first,
      byte[] second) {
    try {
      Mac m = Mac.getInstance("HmacSHA256");
      m.init(new SecretKeySpec(opts.secret(), "HmacSHA256"));
      byte[] l = label.getBytes(StandardCharsets.UTF_8);
      byte[] tag = opts.tag().getBytes(StandardCharsets.UTF_8);
      ByteBuffer head = ByteBuffer.allocate(4 + l.length + 4 + tag.length + 12);
      head.putInt(l.length).put(l).putInt(tag.length).put(tag).putInt(size).putInt(clientRank).putInt(serverRank);
      m.update(head.array());
      m.update(first);
      m.update(second);
      return m.doFinal();
    } catch (GeneralSecurityException e) {
      throw new IllegalStateException("HmacSHA256 is not available in this JVM", e);
    }
  }

  private static int readInt(DataInputStream in, String msg) throws Rejected, IOException {
    try {
      return in.readInt();
    } catch (EOFException e) {
      throw new Rejected("connection closed during " + msg, e);
    } catch (SocketTimeoutException e) {
      throw new Rejected("no complete " + msg + " within the handshake timeout", e);
    }
  }

  private static byte[] readBytes(DataInputStream in, int n, String msg) throws Rejected, IOException {
    byte[] b = new byte[n];
    try {
      in.readFully(b);
    } catch (EOFException e) {
      throw new Rejected("connection closed during " + msg + " (a short message)", e);
    } catch (SocketTimeoutException e) {
      throw new Rejected("no complete " + msg + " within the handshake timeout", e);
    }
    return b;
  }

  private static void writeFully(SocketChannel ch, ByteBuffer b) throws IOException {
    while (b.hasRemaining()) {
      ch.write(b);
    }
  }
}
