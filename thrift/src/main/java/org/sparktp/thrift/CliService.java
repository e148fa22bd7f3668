package org.sparktp.thrift;

import java.nio.ByteBuffer;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.hive.service.rpc.thrift.*;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.StructType;
import org.apache.thrift.TException;
import org.sparktp.cli.SparkTpCli;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * HiveServer2's Thrift service ({@code TCLIService}, protocol V6 to V10: columnar row sets) on Spark: each JDBC
 * session is a {@link SparkSession#newSession() new session} of the server's (its own SQL conf, temporary views and
 * current database; the SparkContext, the catalog, spark-tp's SQL functions and the models registered with
 * {@code spark.tp.models.*} shared). Statements run asynchronously ({@link Operation}); failures reach the client as
 * the statement's error (the message spark-tp or Spark gave, with Spark's SQLSTATE). Sessions of a connection that
 * closes without {@code CloseSession} are closed with it.
 */
final class CliService implements TCLIService.Iface {
  private static final Logger LOG = LoggerFactory.getLogger(CliService.class);
  static final TProtocolVersion MAX_PROTOCOL = TProtocolVersion.HIVE_CLI_SERVICE_PROTOCOL_V10;

  /** A JDBC session. */
  record Session(UUID id, SparkSession spark, String user, Set<UUID> operations) {}

  private final SparkSession root;
  private final Map<UUID, Session> sessions = new ConcurrentHashMap<>();
  private final Map<UUID, Operation> operations = new ConcurrentHashMap<>();
  private final ExecutorService pool;
  /** The sessions opened on the connection the current request came on (set by {@link TpThriftServer}'s handler). */
  final ThreadLocal<Set<UUID>> connection = new ThreadLocal<>();

  CliService(SparkSession root) {
    this.root = root;
    AtomicInteger n = new AtomicInteger();
    this.pool = Executors.newCachedThreadPool(r -> {
      Thread t = new Thread(r, "spark-tp-thrift-statement-" + n.incrementAndGet());
      t.setDaemon(true);
      return t;
    });
  }

  int openSessions() {
    return sessions.size();
  }

  /** Closes every session (their running statements cancelled) and stops the statement threads. */
  void shutdown() {
    for (UUID id : List.copyOf(sessions.keySet())) {
      close(id);
    }
    pool.shutdownNow();
  }

  void close(UUID sessionId) {
    Session s = sessions.remove(sessionId);
    if (s == null) {
      return;
    }
    for (UUID op : List.copyOf(s.operations())) {
      Operation o = operations.remove(op);
      if (o != null) {
        o.stop(s.spark(), TOperationState.CLOSED_STATE);
      }
    }
    LOG.info("closed session {} of {}", sessionId, s.user());
  }

  // ---- handles and statuses

  private static THandleIdentifier ident(UUID id) {
    ByteBuffer b = ByteBuffer.allocate(16).putLong(id.getMostSignificantBits()).putLong(id.getLeastSignificantBits());
    b.flip();
    return new THandleIdentifier(b, b.duplicate());
  }

  private static UUID uuid(THandleIdentifier h) {
    ByteBuffer b = ByteBuffer.wrap(h.getGuid());
    return new UUID(b.getLong(), b.getLong());
  }

  private static TStatus ok() {
    return new TStatus(TStatusCode.SUCCESS_STATUS);
  }

  private static TStatus error(String message, String sqlState) {
    TStatus s = new TStatus(TStatusCode.ERROR_STATUS);
    s.setErrorMessage(message);
    s.setSqlState(sqlState);
    s.setErrorCode(0);
    return s;
  }

  /** A request's failure that the client is to see: its message, one line. */
  static final class RequestException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    RequestException(String message) {
      super(message);
    }
  }

  /** Runs a request; a failure becomes an error status (logged unless it is the client's mistake). */
  private static TStatus run(Runnable body) {
    try {
      body.run();
      return ok();
    } catch (RequestException e) {
      return error(e.getMessage(), null);
    } catch (RuntimeException e) {
      LOG.warn("request failed", e);
      return error(SparkTpCli.message(e), e instanceof org.apache.spark.SparkThrowable t ? t.getSqlState() : null);
    }
  }

  private Session session(TSessionHandle h) {
    Session s = h == null ? null : sessions.get(uuid(h.getSessionId()));
    if (s == null) {
      throw new RequestException("Invalid SessionHandle: no open session with this id on this server (closed,"
          + " or the server restarted); open a new connection");
    }
    return s;
  }

  private Operation operation(TOperationHandle h) {
    Operation o = h == null ? null : operations.get(uuid(h.getOperationId()));
    if (o == null) {
      throw new RequestException("Invalid OperationHandle: no such operation on this server (closed, or its session"
          + " was); run the statement again");
    }
    return o;
  }

  private TOperationHandle register(Session s, Operation op) {
    operations.put(op.id, op);
    s.operations().add(op.id);
    TOperationHandle h = new TOperationHandle(ident(op.id), op.type, true);
    return h;
  }

  /** A metadata call's result as an operation of the session. */
  private TOperationHandle metadata(TSessionHandle sh, TOperationType type, StructType schema,
      java.util.function.Function<SparkSession, List<Row>> rows) {
    Session s = session(sh);
    return register(s, Operation.result(s.id(), type, schema, rows.apply(s.spark())));
  }

  // ---- sessions

  @Override
  public TOpenSessionResp OpenSession(TOpenSessionReq req) {
    TOpenSessionResp resp = new TOpenSessionResp();
    resp.setServerProtocolVersion(MAX_PROTOCOL);
    resp.setStatus(run(() -> {
      TProtocolVersion v = req.getClient_protocol();
      if (v.getValue() < TProtocolVersion.HIVE_CLI_SERVICE_PROTOCOL_V6.getValue()) {
        throw new RequestException("This server speaks HiveServer2 protocol V6 to V10 (columnar results); the client"
            + " asked for " + v + ": use a Hive JDBC driver 1.2 or newer");
      }
      resp.setServerProtocolVersion(v.getValue() < MAX_PROTOCOL.getValue() ? v : MAX_PROTOCOL);
      SparkSession spark = root.newSession();
      String user = req.isSetUsername() ? req.getUsername() : "anonymous";
      Map<String, String> conf = req.isSetConfiguration() ? req.getConfiguration() : Map.of();
      String database = null;
      for (Map.Entry<String, String> e : conf.entrySet()) {
        String k = e.getKey();
        if (k.startsWith("set:hiveconf:") || k.startsWith("set:hivevar:")) {
          String key = k.substring(k.indexOf(':', 4) + 1);
          try {
            spark.conf().set(key, e.getValue());
          } catch (RuntimeException ex) {
            throw new RequestException("Cannot set " + key + " for the session (from the JDBC URL): "
                + SparkTpCli.message(ex));
          }
        } else if (k.equals("use:database")) {
          database = e.getValue();
        }
      }
      if (database != null && !database.isBlank() && !database.equalsIgnoreCase("default")) {
        if (!spark.catalog().databaseExists(database)) {
          throw new RequestException("Database '" + database + "' (from the JDBC URL) does not exist; connect to"
              + " jdbc:hive2://HOST:PORT/default or create it");
        }
        spark.catalog().setCurrentDatabase(database);
      }
      Session s = new Session(UUID.randomUUID(), spark, user, ConcurrentHashMap.newKeySet());
      sessions.put(s.id(), s);
      Set<UUID> conn = connection.get();
      if (conn != null) {
        conn.add(s.id());
      }
      resp.setSessionHandle(new TSessionHandle(ident(s.id())));
      resp.setConfiguration(Map.of());
      LOG.info("opened session {} for {} (protocol {})", s.id(), user, resp.getServerProtocolVersion());
    }));
    return resp;
  }

  @Override
  public TCloseSessionResp CloseSession(TCloseSessionReq req) {
    return new TCloseSessionResp(run(() -> {
      UUID id = session(req.getSessionHandle()).id();
      close(id);
      Set<UUID> conn = connection.get();
      if (conn != null) {
        conn.remove(id);
      }
    }));
  }

  @Override
  public TGetInfoResp GetInfo(TGetInfoReq req) {
    TGetInfoResp resp = new TGetInfoResp();
    resp.setInfoValue(TGetInfoValue.stringValue(""));
    resp.setStatus(run(() -> {
      Session s = session(req.getSessionHandle());
      String value = switch (req.getInfoType()) {
        case CLI_SERVER_NAME -> "Spark SQL (spark-tp)";
        case CLI_DBMS_NAME -> "Spark SQL";
        case CLI_DBMS_VER -> s.spark().version();
        case CLI_ODBC_KEYWORDS -> "Unimplemented";
        default -> throw new RequestException("GetInfo " + req.getInfoType() + " is not supported by this server");
      };
      resp.setInfoValue(TGetInfoValue.stringValue(value));
    }));
    return resp;
  }

  // ---- statements

  @Override
  public TExecuteStatementResp ExecuteStatement(TExecuteStatementReq req) {
    TExecuteStatementResp resp = new TExecuteStatementResp();
    resp.setStatus(run(() -> {
      Session s = session(req.getSessionHandle());
      SparkSession spark = s.spark();
      if (req.isSetConfOverlay()) {
        req.getConfOverlay().forEach((k, v) -> spark.conf().set(k, v));
      }
      boolean async = !req.isSetRunAsync() || req.isRunAsync();
      Operation op = Operation.statement(s.id(), spark, req.getStatement(), async, pool);
      resp.setOperationHandle(register(s, op));
    }));
    return resp;
  }

  @Override
  public TGetOperationStatusResp GetOperationStatus(TGetOperationStatusReq req) {
    TGetOperationStatusResp resp = new TGetOperationStatusResp();
    resp.setStatus(run(() -> {
      Operation op = operation(req.getOperationHandle());
      resp.setOperationState(op.state());
      resp.setOperationStarted(op.started());
      resp.setOperationCompleted(op.completed());
      resp.setHasResultSet(true);
      if (op.state() == TOperationState.ERROR_STATE) {
        resp.setErrorMessage(op.error());
        resp.setSqlState(op.sqlState());
        resp.setErrorCode(0);
      }
    }));
    return resp;
  }

  @Override
  public TCancelOperationResp CancelOperation(TCancelOperationReq req) {
    return new TCancelOperationResp(run(() -> {
      Operation op = operation(req.getOperationHandle());
      op.stop(sessionOf(op), TOperationState.CANCELED_STATE);
    }));
  }

  @Override
  public TCloseOperationResp CloseOperation(TCloseOperationReq req) {
    return new TCloseOperationResp(run(() -> {
      Operation op = operation(req.getOperationHandle());
      operations.remove(op.id);
      Session s = sessions.get(op.session);
      if (s != null) {
        s.operations().remove(op.id);
      }
      op.stop(sessionOf(op), TOperationState.CLOSED_STATE);
    }));
  }

  private SparkSession sessionOf(Operation op) {
    Session s = sessions.get(op.session);
    return s == null ? root : s.spark();
  }

  @Override
  public TGetResultSetMetadataResp GetResultSetMetadata(TGetResultSetMetadataReq req) {
    TGetResultSetMetadataResp resp = new TGetResultSetMetadataResp();
    resp.setStatus(run(() -> resp.setSchema(RowSets.schema(finished(req.getOperationHandle()).schema()))));
    return resp;
  }

  private Operation finished(TOperationHandle h) {
    Operation op = operation(h);
    if (op.state() != TOperationState.FINISHED_STATE) {
      throw new RequestException("The operation is " + op.state().name().replace("_STATE", "").toLowerCase()
          + (op.error() != null ? ": " + op.error() : "") + "; its results can be fetched once it has finished");
    }
    return op;
  }

  @Override
  public TFetchResultsResp FetchResults(TFetchResultsReq req) {
    TFetchResultsResp resp = new TFetchResultsResp();
    resp.setStatus(run(() -> {
      if (req.isSetFetchType() && req.getFetchType() == 1) {
        // the operation log (beeline asks for it while a statement runs): none is kept here
        operation(req.getOperationHandle());
        resp.setResults(RowSets.empty(new StructType().add("operation_log",
            org.apache.spark.sql.types.DataTypes.StringType), 0));
        resp.setHasMoreRows(false);
        return;
      }
      Operation op = finished(req.getOperationHandle());
      TRowSet rows = op.fetch((int) Math.min(Integer.MAX_VALUE, req.getMaxRows()),
          req.getOrientation() == TFetchOrientation.FETCH_FIRST);
      resp.setResults(rows);
      resp.setHasMoreRows(false);
    }));
    return resp;
  }

  @Override
  public TGetQueryIdResp GetQueryId(TGetQueryIdReq req) throws TException {
    Operation op = operations.get(uuid(req.getOperationHandle().getOperationId()));
    if (op == null) {
      throw new TException("no such operation on this server");
    }
    return new TGetQueryIdResp(op.id.toString());
  }

  @Override
  public TSetClientInfoResp SetClientInfo(TSetClientInfoReq req) {
    return new TSetClientInfoResp(run(() -> session(req.getSessionHandle())));
  }

  // ---- metadata

  @Override
  public TGetTypeInfoResp GetTypeInfo(TGetTypeInfoReq req) {
    TGetTypeInfoResp resp = new TGetTypeInfoResp();
    resp.setStatus(run(() -> resp.setOperationHandle(metadata(req.getSessionHandle(), TOperationType.GET_TYPE_INFO,
        Metadata.TYPE_INFO, s -> Metadata.typeInfo()))));
    return resp;
  }

  @Override
  public TGetCatalogsResp GetCatalogs(TGetCatalogsReq req) {
    TGetCatalogsResp resp = new TGetCatalogsResp();
    resp.setStatus(run(() -> resp.setOperationHandle(metadata(req.getSessionHandle(), TOperationType.GET_CATALOGS,
        Metadata.CATALOGS, s -> List.of()))));
    return resp;
  }

  @Override
  public TGetSchemasResp GetSchemas(TGetSchemasReq req) {
    TGetSchemasResp resp = new TGetSchemasResp();
    resp.setStatus(run(() -> resp.setOperationHandle(metadata(req.getSessionHandle(), TOperationType.GET_SCHEMAS,
        Metadata.SCHEMAS, s -> Metadata.schemas(s, req.getSchemaName())))));
    return resp;
  }

  @Override
  public TGetTablesResp GetTables(TGetTablesReq req) {
    TGetTablesResp resp = new TGetTablesResp();
    resp.setStatus(run(() -> resp.setOperationHandle(metadata(req.getSessionHandle(), TOperationType.GET_TABLES,
        Metadata.TABLES, s -> Metadata.tables(s, req.getSchemaName(), req.getTableName(), req.getTableTypes())))));
    return resp;
  }

  @Override
  public TGetTableTypesResp GetTableTypes(TGetTableTypesReq req) {
    TGetTableTypesResp resp = new TGetTableTypesResp();
    resp.setStatus(run(() -> resp.setOperationHandle(metadata(req.getSessionHandle(), TOperationType.GET_TABLE_TYPES,
        Metadata.TABLE_TYPES, s -> Metadata.tableTypes()))));
    return resp;
  }

  @Override
  public TGetColumnsResp GetColumns(TGetColumnsReq req) {
    TGetColumnsResp resp = new TGetColumnsResp();
    resp.setStatus(run(() -> resp.setOperationHandle(metadata(req.getSessionHandle(), TOperationType.GET_COLUMNS,
        Metadata.COLUMNS, s -> Metadata.columns(s, req.getSchemaName(), req.getTableName(), req.getColumnName())))));
    return resp;
  }

  @Override
  public TGetFunctionsResp GetFunctions(TGetFunctionsReq req) {
    TGetFunctionsResp resp = new TGetFunctionsResp();
    resp.setStatus(run(() -> resp.setOperationHandle(metadata(req.getSessionHandle(), TOperationType.GET_FUNCTIONS,
        Metadata.FUNCTIONS, s -> Metadata.functions(s, req.getFunctionName())))));
    return resp;
  }

  @Override
  public TGetPrimaryKeysResp GetPrimaryKeys(TGetPrimaryKeysReq req) {
    TGetPrimaryKeysResp resp = new TGetPrimaryKeysResp();
    resp.setStatus(run(() -> resp.setOperationHandle(metadata(req.getSessionHandle(), TOperationType.UNKNOWN,
        Metadata.PRIMARY_KEYS, s -> List.of()))));
    return resp;
  }

  @Override
  public TGetCrossReferenceResp GetCrossReference(TGetCrossReferenceReq req) {
    TGetCrossReferenceResp resp = new TGetCrossReferenceResp();
    resp.setStatus(run(() -> resp.setOperationHandle(metadata(req.getSessionHandle(), TOperationType.UNKNOWN,
        Metadata.CROSS_REFERENCE, s -> List.of()))));
    return resp;
  }

  // ---- not supported: delegation tokens (no Kerberos), data upload/download

  private static TStatus unsupported(String what) {
    return error(what + " is not supported by the spark-tp Thrift server (it runs without Kerberos)", null);
  }

  @Override
  public TGetDelegationTokenResp GetDelegationToken(TGetDelegationTokenReq req) {
    return new TGetDelegationTokenResp(unsupported("GetDelegationToken"));
  }

  @Override
  public TCancelDelegationTokenResp CancelDelegationToken(TCancelDelegationTokenReq req) {
    return new TCancelDelegationTokenResp(unsupported("CancelDelegationToken"));
  }

  @Override
  public TRenewDelegationTokenResp RenewDelegationToken(TRenewDelegationTokenReq req) {
    return new TRenewDelegationTokenResp(unsupported("RenewDelegationToken"));
  }

  @Override
  public TUploadDataResp UploadData(TUploadDataReq req) {
    return new TUploadDataResp(error("UploadData is not supported by the spark-tp Thrift server", null), null);
  }

  @Override
  public TDownloadDataResp DownloadData(TDownloadDataReq req) {
    return new TDownloadDataResp(error("DownloadData is not supported by the spark-tp Thrift server", null), null);
  }
}
