package org.sparktp.thrift;

import java.util.List;
import java.util.UUID;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Future;
import org.apache.hive.service.rpc.thrift.TOperationState;
import org.apache.hive.service.rpc.thrift.TOperationType;
import org.apache.hive.service.rpc.thrift.TRowSet;
import org.apache.spark.SparkThrowable;
import org.apache.spark.sql.AnalysisException;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.sparktp.cli.SparkTpCli;

/**
 * One operation of a session: a statement (run on a thread of its own, its Spark jobs in a job group named by the
 * operation, so that a cancel stops them) or a metadata call (computed at once). Its result is collected on the
 * driver, as Spark's Thrift server does by default ({@code spark.sql.thriftServer.incrementalCollect=false}), and
 * fetched in pieces.
 */
final class Operation {
  private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(Operation.class);
  /** The single column of a statement that returns none (DDL, SET), as Spark's Thrift server shows it. */
  private static final StructType NO_RESULT = new StructType().add("Result", DataTypes.StringType);

  final UUID id = UUID.randomUUID();
  final UUID session;
  final TOperationType type;
  private final long started = System.currentTimeMillis();
  private volatile long completed;
  private volatile TOperationState state = TOperationState.INITIALIZED_STATE;
  private volatile String error;
  private volatile String sqlState;
  private volatile StructType schema = NO_RESULT;
  private volatile List<Row> rows = List.of();
  private int cursor;
  private Future<?> running;

  private Operation(UUID session, TOperationType type) {
    this.session = session;
    this.type = type;
  }

  /** A metadata result, finished. */
  static Operation result(UUID session, TOperationType type, StructType schema, List<Row> rows) {
    Operation op = new Operation(session, type);
    op.schema = schema;
    op.rows = rows;
    op.completed = op.started;
    op.state = TOperationState.FINISHED_STATE;
    return op;
  }

  /** A statement on {@code spark}: started on {@code pool}, or run to its end here when {@code async} is false. */
  static Operation statement(UUID session, SparkSession spark, String sql, boolean async, ExecutorService pool) {
    Operation op = new Operation(session, TOperationType.EXECUTE_STATEMENT);
    op.state = TOperationState.PENDING_STATE;
    Runnable run = () -> op.run(spark, sql);
    if (async) {
      synchronized (op) {
        op.running = pool.submit(run);
      }
    } else {
      run.run();
    }
    return op;
  }

  private void run(SparkSession spark, String sql) {
    synchronized (this) {
      if (state != TOperationState.PENDING_STATE) {
        return; // cancelled or closed before it started
      }
      state = TOperationState.RUNNING_STATE;
    }
    SparkSession.setActiveSession(spark);
    spark.sparkContext().setJobGroup(id.toString(), sql.length() > 200 ? sql.substring(0, 200) : sql, true);
    try {
      Dataset<Row> df = spark.sql(sql);
      List<Row> out = df.collectAsList();
      StructType s = df.schema();
      if (s.fields().length > 0) {
        schema = s;
        rows = out;
      }
      finish(TOperationState.FINISHED_STATE, null, null);
    } catch (Throwable e) {
      String message = e instanceof AnalysisException ? e.getMessage() : SparkTpCli.message(e);
      LOG.warn("statement {} failed: {}", id, message, e instanceof AnalysisException ? null : e);
      finish(TOperationState.ERROR_STATE, message, e instanceof SparkThrowable t ? t.getSqlState() : null);
      if (e instanceof Error err && !(e instanceof StackOverflowError)) {
        throw err; // an OutOfMemoryError and the like: the pool thread's handler sees it too
      }
    } finally {
      spark.sparkContext().clearJobGroup();
      SparkSession.clearActiveSession();
    }
  }

  /** Sets the end state unless the operation was cancelled or closed meanwhile. */
  private synchronized void finish(TOperationState end, String message, String sql) {
    if (state == TOperationState.RUNNING_STATE) {
      error = message;
      sqlState = sql;
      state = end;
      completed = System.currentTimeMillis();
    }
  }

  /** Stops the operation's Spark jobs (the state becomes {@code to}: canceled or closed). */
  void stop(SparkSession spark, TOperationState to) {
    boolean wasRunning;
    synchronized (this) {
      wasRunning = state == TOperationState.RUNNING_STATE || state == TOperationState.PENDING_STATE;
      if (wasRunning || to == TOperationState.CLOSED_STATE) {
        state = to;
        completed = System.currentTimeMillis();
      }
      if (running != null) {
        running.cancel(false);
      }
    }
    if (wasRunning) {
      spark.sparkContext().cancelJobGroup(id.toString());
    }
    if (to == TOperationState.CLOSED_STATE) {
      rows = List.of();
    }
  }

  TOperationState state() {
    return state;
  }

  String error() {
    return error;
  }

  String sqlState() {
    return sqlState;
  }

  long started() {
    return started;
  }

  long completed() {
    return completed;
  }

  StructType schema() {
    return schema;
  }

  /** The next {@code max} rows (from the first row again when {@code fromStart}); an empty set at the end. */
  synchronized TRowSet fetch(int max, boolean fromStart) {
    if (fromStart) {
      cursor = 0;
    }
    List<Row> all = rows;
    int from = Math.min(cursor, all.size());
    int to = (int) Math.min((long) from + Math.max(1, max), all.size());
    cursor = to;
    return RowSets.rows(schema, all, from, to);
  }
}
