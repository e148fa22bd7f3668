package org.sparktp.thrift;

import java.nio.ByteBuffer;
import java.sql.Types;
import java.util.ArrayList;
import java.util.List;
import org.apache.hive.service.rpc.thrift.TBinaryColumn;
import org.apache.hive.service.rpc.thrift.TBoolColumn;
import org.apache.hive.service.rpc.thrift.TByteColumn;
import org.apache.hive.service.rpc.thrift.TColumn;
import org.apache.hive.service.rpc.thrift.TColumnDesc;
import org.apache.hive.service.rpc.thrift.TDoubleColumn;
import org.apache.hive.service.rpc.thrift.TI16Column;
import org.apache.hive.service.rpc.thrift.TI32Column;
import org.apache.hive.service.rpc.thrift.TI64Column;
import org.apache.hive.service.rpc.thrift.TPrimitiveTypeEntry;
import org.apache.hive.service.rpc.thrift.TRowSet;
import org.apache.hive.service.rpc.thrift.TStringColumn;
import org.apache.hive.service.rpc.thrift.TTableSchema;
import org.apache.hive.service.rpc.thrift.TTypeDesc;
import org.apache.hive.service.rpc.thrift.TTypeEntry;
import org.apache.hive.service.rpc.thrift.TTypeId;
import org.apache.hive.service.rpc.thrift.TTypeQualifierValue;
import org.apache.hive.service.rpc.thrift.TTypeQualifiers;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.execution.HiveResult;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.DecimalType;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;

/**
 * Spark rows as HiveServer2's columnar row sets (protocol V6 and later), typed as Spark's own Thrift server types them:
 * numbers and booleans in their Thrift columns (a float as the double its decimal text reads as), strings and binary
 * as such, everything else (decimals, dates, timestamps, arrays, maps, structs, intervals) as the text Spark's
 * {@code HiveResult} writes, e.g. {@code [0.25,-1.5]} for an {@code array<float>}.
 */
final class RowSets {
  private RowSets() {}

  /** Kinds of Thrift column; every Spark type maps to one. */
  private enum Kind { BOOL, BYTE, I16, I32, I64, FLOAT, DOUBLE, STRING, BINARY, TEXT }

  private static Kind kind(DataType t) {
    if (t.equals(DataTypes.BooleanType)) {
      return Kind.BOOL;
    } else if (t.equals(DataTypes.ByteType)) {
      return Kind.BYTE;
    } else if (t.equals(DataTypes.ShortType)) {
      return Kind.I16;
    } else if (t.equals(DataTypes.IntegerType)) {
      return Kind.I32;
    } else if (t.equals(DataTypes.LongType)) {
      return Kind.I64;
    } else if (t.equals(DataTypes.FloatType)) {
      return Kind.FLOAT;
    } else if (t.equals(DataTypes.DoubleType)) {
      return Kind.DOUBLE;
    } else if (t.equals(DataTypes.StringType) || t.typeName().startsWith("char") || t.typeName().startsWith("varchar")) {
      return Kind.STRING;
    } else if (t.equals(DataTypes.BinaryType)) {
      return Kind.BINARY;
    }
    return Kind.TEXT;
  }

  /** The HiveServer2 type of a Spark type. */
  static TTypeId typeId(DataType t) {
    switch (kind(t)) {
      case BOOL: return TTypeId.BOOLEAN_TYPE;
      case BYTE: return TTypeId.TINYINT_TYPE;
      case I16: return TTypeId.SMALLINT_TYPE;
      case I32: return TTypeId.INT_TYPE;
      case I64: return TTypeId.BIGINT_TYPE;
      case FLOAT: return TTypeId.FLOAT_TYPE;
      case DOUBLE: return TTypeId.DOUBLE_TYPE;
      case STRING: return TTypeId.STRING_TYPE;
      case BINARY: return TTypeId.BINARY_TYPE;
      default: break;
    }
    String name = t.typeName();
    if (name.startsWith("decimal")) {
      return TTypeId.DECIMAL_TYPE;
    } else if (name.equals("date")) {
      return TTypeId.DATE_TYPE;
    } else if (name.startsWith("timestamp")) {
      return TTypeId.TIMESTAMP_TYPE;
    } else if (name.equals("array")) {
      return TTypeId.ARRAY_TYPE;
    } else if (name.equals("map")) {
      return TTypeId.MAP_TYPE;
    } else if (name.equals("struct")) {
      return TTypeId.STRUCT_TYPE;
    } else if (name.equals("void")) {
      return TTypeId.NULL_TYPE;
    } else if (name.startsWith("interval year") || name.startsWith("interval month")) {
      return TTypeId.INTERVAL_YEAR_MONTH_TYPE;
    } else if (name.startsWith("interval day") || name.startsWith("interval hour") || name.startsWith("interval minute")
        || name.startsWith("interval second")) {
      return TTypeId.INTERVAL_DAY_TIME_TYPE;
    }
    return TTypeId.STRING_TYPE;
  }

  /** The {@code java.sql.Types} code of a Spark type (GetColumns' DATA_TYPE). */
  static int sqlType(DataType t) {
    switch (typeId(t)) {
      case BOOLEAN_TYPE: return Types.BOOLEAN;
      case TINYINT_TYPE: return Types.TINYINT;
      case SMALLINT_TYPE: return Types.SMALLINT;
      case INT_TYPE: return Types.INTEGER;
      case BIGINT_TYPE: return Types.BIGINT;
      case FLOAT_TYPE: return Types.FLOAT;
      case DOUBLE_TYPE: return Types.DOUBLE;
      case DECIMAL_TYPE: return Types.DECIMAL;
      case DATE_TYPE: return Types.DATE;
      case TIMESTAMP_TYPE: return Types.TIMESTAMP;
      case BINARY_TYPE: return Types.BINARY;
      case ARRAY_TYPE: return Types.ARRAY;
      case MAP_TYPE: return Types.JAVA_OBJECT;
      case STRUCT_TYPE: return Types.STRUCT;
      case NULL_TYPE: return Types.NULL;
      default: return Types.VARCHAR;
    }
  }

  /** The result set's columns: name, HiveServer2 type (decimals with precision and scale), position. */
  static TTableSchema schema(StructType schema) {
    TTableSchema out = new TTableSchema();
    StructField[] fields = schema.fields();
    for (int i = 0; i < fields.length; i++) {
      DataType t = fields[i].dataType();
      TPrimitiveTypeEntry entry = new TPrimitiveTypeEntry(typeId(t));
      if (t instanceof DecimalType d) {
        TTypeQualifiers q = new TTypeQualifiers();
        q.putToQualifiers("precision", TTypeQualifierValue.i32Value(d.precision()));
        q.putToQualifiers("scale", TTypeQualifierValue.i32Value(d.scale()));
        entry.setTypeQualifiers(q);
      }
      TTypeDesc desc = new TTypeDesc();
      desc.addToTypes(TTypeEntry.primitiveEntry(entry));
      TColumnDesc col = new TColumnDesc(fields[i].name(), desc, i + 1);
      fields[i].getComment().foreach(c -> {
        col.setComment(c);
        return null;
      });
      out.addToColumns(col);
    }
    return out;
  }

  /** Rows {@code from} (inclusive) to {@code to} (exclusive) as a columnar row set starting at offset {@code from}. */
  static TRowSet rows(StructType schema, List<Row> rows, int from, int to) {
    TRowSet out = new TRowSet(from, new ArrayList<>());
    StructField[] fields = schema.fields();
    HiveResult.TimeFormatters time = HiveResult.getTimeFormatters();
    scala.Function1<byte[], String> binary = HiveResult.getBinaryFormatter();
    for (int c = 0; c < fields.length; c++) {
      DataType t = fields[c].dataType();
      List<Row> part = rows.subList(from, to);
      byte[] nulls = new byte[(part.size() + 7) / 8];
      for (int r = 0; r < part.size(); r++) {
        if (part.get(r).isNullAt(c)) {
          nulls[r / 8] |= (byte) (1 << (r % 8));
        }
      }
      ByteBuffer nb = ByteBuffer.wrap(nulls);
      final int col = c;
      out.addToColumns(switch (kind(t)) {
        case BOOL -> TColumn.boolVal(new TBoolColumn(values(part, col, false, Row::getBoolean), nb));
        case BYTE -> TColumn.byteVal(new TByteColumn(values(part, col, (byte) 0, Row::getByte), nb));
        case I16 -> TColumn.i16Val(new TI16Column(values(part, col, (short) 0, Row::getShort), nb));
        case I32 -> TColumn.i32Val(new TI32Column(values(part, col, 0, Row::getInt), nb));
        case I64 -> TColumn.i64Val(new TI64Column(values(part, col, 0L, Row::getLong), nb));
        case FLOAT -> TColumn.doubleVal(new TDoubleColumn(values(part, col, 0.0,
            (row, i) -> Double.parseDouble(Float.toString(row.getFloat(i)))), nb));
        case DOUBLE -> TColumn.doubleVal(new TDoubleColumn(values(part, col, 0.0, Row::getDouble), nb));
        case STRING -> TColumn.stringVal(new TStringColumn(values(part, col, "", (row, i) -> row.get(i).toString()), nb));
        case BINARY -> TColumn.binaryVal(new TBinaryColumn(values(part, col, ByteBuffer.allocate(0),
            (row, i) -> ByteBuffer.wrap((byte[]) row.get(i))), nb));
        case TEXT -> TColumn.stringVal(new TStringColumn(values(part, col, "",
            (row, i) -> HiveResult.toHiveString(new scala.Tuple2<>(row.get(i), t), false, time, binary)), nb));
      });
    }
    return out;
  }

  /** Reads one column of a row. */
  @FunctionalInterface
  private interface Getter<T> {
    T get(Row row, int col);
  }

  private static <T> List<T> values(List<Row> rows, int col, T ifNull, Getter<T> get) {
    List<T> out = new ArrayList<>(rows.size());
    for (Row r : rows) {
      out.add(r.isNullAt(col) ? ifNull : get.get(r, col));
    }
    return out;
  }

  /** An empty row set of {@code schema}'s columns (the end of a result). */
  static TRowSet empty(StructType schema, long offset) {
    TRowSet rs = rows(schema, List.of(), 0, 0);
    rs.setStartRowOffset(offset);
    return rs;
  }
}
