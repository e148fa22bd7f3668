package org.sparktp.thrift;

import java.net.InetSocketAddress;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.hive.service.rpc.thrift.TCLIService;
import org.apache.spark.sql.SparkSession;
import org.apache.thrift.protocol.TBinaryProtocol;
import org.apache.thrift.protocol.TProtocol;
import org.apache.thrift.server.ServerContext;
import org.apache.thrift.server.TServerEventHandler;
import org.apache.thrift.server.TThreadPoolServer;
import org.apache.thrift.transport.TSaslServerTransport;
import org.apache.thrift.transport.TServerSocket;
import org.apache.thrift.transport.TTransport;
import org.apache.thrift.transport.TTransportException;
import org.sparktp.cli.Sessions;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code bin/spark-tp thrift-server [--master URL] [--host ADDR] [--port P] [--conf key=value]...}: a JDBC/ODBC
 * server for BI tools and SQL clients, speaking HiveServer2's Thrift protocol (binary transport, SASL PLAIN with any
 * user and password, as HiveServer2 with {@code hive.server2.authentication=NONE}), on a Spark session with
 * spark-tp's SQL functions ({@code tp_predict}, {@code tp_embed}, ...). Clients connect with the Hive JDBC driver
 * ({@code jdbc:hive2://HOST:PORT/default}), beeline, or the Spark/Hive ODBC drivers.
 *
 * <p>Spark's own Thrift server ({@code spark-hive-thriftserver}) does the same on a Hive-enabled session; this one
 * needs neither Hive nor that module: only Hive's Thrift service definition ({@code hive-service-rpc}) and libthrift.
 * Prints {@code spark-tp thrift-server: listening on jdbc:hive2://HOST:PORT/default} once clients can connect;
 * stops (sessions closed, statements cancelled, Spark stopped) on SIGINT/SIGTERM.
 */
public final class TpThriftServer implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(TpThriftServer.class);
  static final String USAGE = "usage: spark-tp thrift-server [--master URL] [--host ADDR (127.0.0.1)] [--port P (10000;"
      + " 0: any free port)] [--conf key=value]...";

  private final SparkSession spark;
  private final CliService service;
  private final TServerSocket socket;
  private final TThreadPoolServer server;
  private final Thread serving;
  private final CountDownLatch stopped = new CountDownLatch(1);
  private boolean closed;

  private TpThriftServer(SparkSession spark, String host, int port) throws TTransportException {
    this.spark = spark;
    this.service = new CliService(spark);
    PlainSasl.register();
    TSaslServerTransport.Factory sasl = new TSaslServerTransport.Factory();
    sasl.addServerDefinition(PlainSasl.MECHANISM, "hive", host, Map.of(), callbacks -> { });
    this.socket = new TServerSocket(new InetSocketAddress(host, port));
    TThreadPoolServer.Args args = new TThreadPoolServer.Args(socket)
        .processor(new TCLIService.Processor<>(service))
        .transportFactory(sasl)
        .protocolFactory(new TBinaryProtocol.Factory())
        .minWorkerThreads(1)
        .maxWorkerThreads(200)
        .stopTimeoutVal(5)
        .stopTimeoutUnit(TimeUnit.SECONDS);
    this.server = new TThreadPoolServer(args);
    server.setServerEventHandler(new Connections(service));
    this.serving = new Thread(() -> {
      try {
        server.serve();
      } finally {
        stopped.countDown();
      }
    }, "spark-tp-thrift-server");
    serving.start();
  }

  /** Starts a server on {@code spark} at {@code host:port} ({@code port} 0: a free one); returns once it accepts. */
  public static TpThriftServer start(SparkSession spark, String host, int port) throws TTransportException {
    TpThriftServer s = new TpThriftServer(spark, host, port);
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
    while (!s.server.isServing() && s.stopped.getCount() > 0 && System.nanoTime() < deadline) {
      try {
        Thread.sleep(10);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        s.close();
        throw new IllegalStateException("interrupted while the Thrift server started", e);
      }
    }
    if (!s.server.isServing()) {
      s.close();
      throw new IllegalStateException("The Thrift server on " + host + ":" + port + " did not start serving");
    }
    return s;
  }

  /** The port clients connect to. */
  public int port() {
    return socket.getServerSocket().getLocalPort();
  }

  /** Open JDBC sessions. */
  public int sessions() {
    return service.openSessions();
  }

  /** Waits until the server has stopped. */
  public void await() throws InterruptedException {
    stopped.await();
  }

  /** Stops accepting, closes every session (cancelling its statements); the Spark session is the caller's. */
  @Override
  public synchronized void close() {
    if (closed) {
      return;
    }
    closed = true;
    server.stop();
    socket.close();
    service.shutdown();
    try {
      serving.join(TimeUnit.SECONDS.toMillis(10));
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }

  /** Tracks the sessions each connection opened and closes them when the connection goes. */
  private static final class Connections implements TServerEventHandler {
    private final CliService service;

    Connections(CliService service) {
      this.service = service;
    }

    /** A connection's sessions. */
    private static final class Conn implements ServerContext {
      final Set<UUID> sessions = ConcurrentHashMap.newKeySet();

      @Override
      public <T> T unwrap(Class<T> iface) {
        return iface.cast(this);
      }

      @Override
      public boolean isWrapperFor(Class<?> iface) {
        return iface.isInstance(this);
      }
    }

    @Override
    public void preServe() {}

    @Override
    public ServerContext createContext(TProtocol in, TProtocol out) {
      return new Conn();
    }

    @Override
    public void deleteContext(ServerContext ctx, TProtocol in, TProtocol out) {
      for (UUID id : ((Conn) ctx).sessions) {
        service.close(id); // the client went away without CloseSession
      }
      service.connection.remove();
    }

    @Override
    public void processContext(ServerContext ctx, TTransport in, TTransport out) {
      service.connection.set(((Conn) ctx).sessions);
    }
  }

  // ---- the launcher

  /** Wrong command line: one line and the usage, exit code 2. */
  static final class Usage extends RuntimeException {
    private static final long serialVersionUID = 1L;

    Usage(String message) {
      super(message);
    }
  }

  /** The parsed command line. */
  record Options(String master, String host, int port, Map<String, String> confs) {}

  static Options parse(String[] args) {
    String master = null;
    String host = null;
    int port = 10000;
    Map<String, String> confs = new LinkedHashMap<>();
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      String flag = a.contains("=") && a.startsWith("--") ? a.substring(0, a.indexOf('=')) : a;
      String inline = flag.equals(a) ? null : a.substring(a.indexOf('=') + 1);
      if (!Set.of("--master", "--host", "--port", "--conf").contains(flag)) {
        throw new Usage("unknown argument '" + a + "'");
      }
      String v = inline;
      if (v == null) {
        if (i + 1 >= args.length) {
          throw new Usage(flag + " needs a value");
        }
        v = args[++i];
      }
      switch (flag) {
        case "--master" -> master = v;
        case "--host" -> host = v;
        case "--port" -> {
          try {
            port = Integer.parseInt(v);
          } catch (NumberFormatException e) {
            port = -1;
          }
          if (port < 0 || port > 65535) {
            throw new Usage("--port " + v + ": not a port number (0..65535; 0 picks a free port)");
          }
        }
        default -> {
          int eq = v.indexOf('=');
          if (eq <= 0) {
            throw new Usage("--conf " + v + ": expected key=value");
          }
          confs.put(v.substring(0, eq), v.substring(eq + 1));
        }
      }
    }
    if (host == null) {
      // the driver's address (bin/spark-tp sets SPARK_LOCAL_IP to the one the cluster reaches), else loopback
      String local = System.getenv("SPARK_LOCAL_IP");
      host = local == null || local.isBlank() ? "127.0.0.1" : local;
    }
    return new Options(master, host, port, confs);
  }

  public static void main(String[] args) throws Exception {
    Options o;
    try {
      o = parse(args);
    } catch (Usage e) {
      System.err.println("spark-tp thrift-server: " + e.getMessage());
      System.err.println(USAGE);
      System.exit(2); // the entry point only
      return;
    }
    SparkSession spark = Sessions.open("thrift-server", o.master(), Sessions.withExtensions(o.confs()));
    TpThriftServer server;
    try {
      server = start(spark, o.host(), o.port());
    } catch (RuntimeException | TTransportException e) {
      spark.stop();
      System.err.println("spark-tp thrift-server: cannot listen on " + o.host() + ":" + o.port() + ": "
          + org.sparktp.cli.SparkTpCli.message(e));
      System.exit(1);
      return;
    }
    Thread hook = new Thread(() -> {
      LOG.info("stopping: {} open session(s) closed", server.sessions());
      server.close();
      spark.stop();
    }, "spark-tp-thrift-shutdown");
    Runtime.getRuntime().addShutdownHook(hook);
    String host = o.host().contains(":") ? "[" + o.host() + "]" : o.host();
    System.out.println("spark-tp thrift-server: listening on jdbc:hive2://" + host + ":" + server.port()
        + "/default (Spark " + spark.version() + ", master " + spark.sparkContext().master() + ")");
    System.out.flush();
    server.await();
  }
}
