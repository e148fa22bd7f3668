package org.sparktp.thrift;

import java.sql.DatabaseMetaData;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.regex.Pattern;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalog.Database;
import org.apache.spark.sql.catalog.Function;
import org.apache.spark.sql.catalog.Table;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.DecimalType;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;

/**
 * The JDBC metadata calls ({@code DatabaseMetaData.getSchemas}, {@code getTables}, {@code getColumns},
 * {@code getFunctions}, {@code getTypeInfo}, ...) that BI tools make to show a catalog, answered from the session's
 * Spark catalog, with the columns (names and order) that JDBC defines for each. Temporary views are listed in the
 * session's current database; there are no catalogs (TABLE_CAT is null), primary or foreign keys.
 */
final class Metadata {
  private Metadata() {}

  static final StructType CATALOGS = strings("TABLE_CAT");
  static final StructType SCHEMAS = strings("TABLE_SCHEM", "TABLE_CATALOG");
  static final StructType TABLE_TYPES = strings("TABLE_TYPE");
  static final StructType TABLES = strings("TABLE_CAT", "TABLE_SCHEM", "TABLE_NAME", "TABLE_TYPE", "REMARKS",
      "TYPE_CAT", "TYPE_SCHEM", "TYPE_NAME", "SELF_REFERENCING_COL_NAME", "REF_GENERATION");
  static final StructType COLUMNS = new StructType()
      .add("TABLE_CAT", DataTypes.StringType).add("TABLE_SCHEM", DataTypes.StringType)
      .add("TABLE_NAME", DataTypes.StringType).add("COLUMN_NAME", DataTypes.StringType)
      .add("DATA_TYPE", DataTypes.IntegerType).add("TYPE_NAME", DataTypes.StringType)
      .add("COLUMN_SIZE", DataTypes.IntegerType).add("BUFFER_LENGTH", DataTypes.ByteType)
      .add("DECIMAL_DIGITS", DataTypes.IntegerType).add("NUM_PREC_RADIX", DataTypes.IntegerType)
      .add("NULLABLE", DataTypes.IntegerType).add("REMARKS", DataTypes.StringType)
      .add("COLUMN_DEF", DataTypes.StringType).add("SQL_DATA_TYPE", DataTypes.IntegerType)
      .add("SQL_DATETIME_SUB", DataTypes.IntegerType).add("CHAR_OCTET_LENGTH", DataTypes.IntegerType)
      .add("ORDINAL_POSITION", DataTypes.IntegerType).add("IS_NULLABLE", DataTypes.StringType)
      .add("SCOPE_CATALOG", DataTypes.StringType).add("SCOPE_SCHEMA", DataTypes.StringType)
      .add("SCOPE_TABLE", DataTypes.StringType).add("SOURCE_DATA_TYPE", DataTypes.ShortType)
      .add("IS_AUTO_INCREMENT", DataTypes.StringType);
  static final StructType FUNCTIONS = new StructType()
      .add("FUNCTION_CAT", DataTypes.StringType).add("FUNCTION_SCHEM", DataTypes.StringType)
      .add("FUNCTION_NAME", DataTypes.StringType).add("REMARKS", DataTypes.StringType)
      .add("FUNCTION_TYPE", DataTypes.IntegerType).add("SPECIFIC_NAME", DataTypes.StringType);
  static final StructType TYPE_INFO = new StructType()
      .add("TYPE_NAME", DataTypes.StringType).add("DATA_TYPE", DataTypes.IntegerType)
      .add("PRECISION", DataTypes.IntegerType).add("LITERAL_PREFIX", DataTypes.StringType)
      .add("LITERAL_SUFFIX", DataTypes.StringType).add("CREATE_PARAMS", DataTypes.StringType)
      .add("NULLABLE", DataTypes.ShortType).add("CASE_SENSITIVE", DataTypes.BooleanType)
      .add("SEARCHABLE", DataTypes.ShortType).add("UNSIGNED_ATTRIBUTE", DataTypes.BooleanType)
      .add("FIXED_PREC_SCALE", DataTypes.BooleanType).add("AUTO_INCREMENT", DataTypes.BooleanType)
      .add("LOCAL_TYPE_NAME", DataTypes.StringType).add("MINIMUM_SCALE", DataTypes.ShortType)
      .add("MAXIMUM_SCALE", DataTypes.ShortType).add("SQL_DATA_TYPE", DataTypes.IntegerType)
      .add("SQL_DATETIME_SUB", DataTypes.IntegerType).add("NUM_PREC_RADIX", DataTypes.IntegerType);
  static final StructType PRIMARY_KEYS = strings("TABLE_CAT", "TABLE_SCHEM", "TABLE_NAME", "COLUMN_NAME",
      "KEY_SEQ", "PK_NAME");
  static final StructType CROSS_REFERENCE = strings("PKTABLE_CAT", "PKTABLE_SCHEM", "PKTABLE_NAME",
      "PKCOLUMN_NAME", "FKTABLE_CAT", "FKTABLE_SCHEM", "FKTABLE_NAME", "FKCOLUMN_NAME", "KEY_SEQ", "UPDATE_RULE",
      "DELETE_RULE", "FK_NAME", "PK_NAME", "DEFERRABILITY");

  private static StructType strings(String... names) {
    StructType s = new StructType();
    for (String n : names) {
      s = s.add(n, DataTypes.StringType);
    }
    return s;
  }

  /** A JDBC search pattern ({@code %} any run, {@code _} one character, {@code \} escapes; null: all) as a regex. */
  static Pattern pattern(String p) {
    if (p == null || p.isEmpty() || p.equals("*")) {
      return Pattern.compile(".*", Pattern.DOTALL);
    }
    StringBuilder re = new StringBuilder();
    for (int i = 0; i < p.length(); i++) {
      char c = p.charAt(i);
      if (c == '\\' && i + 1 < p.length()) {
        re.append(Pattern.quote(String.valueOf(p.charAt(++i))));
      } else if (c == '%') {
        re.append(".*");
      } else if (c == '_') {
        re.append('.');
      } else {
        re.append(Pattern.quote(String.valueOf(c)));
      }
    }
    return Pattern.compile(re.toString(), Pattern.CASE_INSENSITIVE | Pattern.DOTALL);
  }

  static List<Row> schemas(SparkSession spark, String schemaPattern) {
    Pattern p = pattern(schemaPattern);
    List<Row> out = new ArrayList<>();
    for (Database d : spark.catalog().listDatabases().collectAsList()) {
      if (p.matcher(d.name()).matches()) {
        out.add(RowFactory.create(d.name(), null));
      }
    }
    return out;
  }

  /** A table or view of a database (temporary views: in the current database). */
  private record Entry(String schema, String name, String type, String remarks, boolean temporary) {
    String qualified() {
      return temporary ? quote(name) : quote(schema) + "." + quote(name);
    }
  }

  private static String quote(String id) {
    return "`" + id.replace("`", "``") + "`";
  }

  private static List<Entry> entries(SparkSession spark, String schemaPattern, String tablePattern, List<String> types) {
    Pattern sp = pattern(schemaPattern);
    Pattern tp = pattern(tablePattern);
    String current = spark.catalog().currentDatabase();
    List<Entry> out = new ArrayList<>();
    for (Database d : spark.catalog().listDatabases().collectAsList()) {
      if (!sp.matcher(d.name()).matches()) {
        continue;
      }
      List<Table> tables;
      try {
        tables = spark.catalog().listTables(d.name()).collectAsList();
      } catch (org.apache.spark.sql.AnalysisException e) {
        throw new IllegalStateException("Cannot list the tables of database " + d.name() + ": " + e.getMessage(), e);
      }
      for (Table t : tables) {
        boolean temp = t.isTemporary();
        String type = temp || "VIEW".equalsIgnoreCase(t.tableType()) ? "VIEW" : "TABLE";
        if ((temp && !d.name().equals(current)) || !tp.matcher(t.name()).matches()
            || (types != null && !types.isEmpty() && types.stream().noneMatch(type::equalsIgnoreCase))) {
          continue;
        }
        out.add(new Entry(d.name(), t.name(), type, t.description(), temp));
      }
    }
    return out;
  }

  static List<Row> tables(SparkSession spark, String schemaPattern, String tablePattern, List<String> types) {
    List<Row> out = new ArrayList<>();
    for (Entry e : entries(spark, schemaPattern, tablePattern, types)) {
      out.add(RowFactory.create(null, e.schema(), e.name(), e.type(), e.remarks() == null ? "" : e.remarks(),
          null, null, null, null, null));
    }
    return out;
  }

  static List<Row> tableTypes() {
    return List.of(RowFactory.create("TABLE"), RowFactory.create("VIEW"));
  }

  static List<Row> columns(SparkSession spark, String schemaPattern, String tablePattern, String columnPattern) {
    Pattern cp = pattern(columnPattern);
    List<Row> out = new ArrayList<>();
    for (Entry e : entries(spark, schemaPattern, tablePattern, null)) {
      StructField[] fields = spark.table(e.qualified()).schema().fields();
      for (int i = 0; i < fields.length; i++) {
        StructField f = fields[i];
        if (!cp.matcher(f.name()).matches()) {
          continue;
        }
        DataType t = f.dataType();
        Integer size = columnSize(t);
        Integer digits = t instanceof DecimalType d ? d.scale() : null;
        out.add(RowFactory.create(null, e.schema(), e.name(), f.name(), RowSets.sqlType(t), t.sql(), size, null,
            digits, size == null ? null : 10, f.nullable() ? DatabaseMetaData.columnNullable
                : DatabaseMetaData.columnNoNulls, f.getComment().getOrElse(() -> ""), null, null, null, null, i + 1,
            f.nullable() ? "YES" : "NO", null, null, null, null, "NO"));
      }
    }
    return out;
  }

  /** Digits of a numeric type (null for the others). */
  private static Integer columnSize(DataType t) {
    if (t instanceof DecimalType d) {
      return d.precision();
    }
    return switch (t.typeName()) {
      case "byte" -> 3;
      case "short" -> 5;
      case "integer" -> 10;
      case "long" -> 19;
      case "float" -> 7;
      case "double" -> 15;
      default -> null;
    };
  }

  static List<Row> functions(SparkSession spark, String functionPattern) {
    Pattern p = pattern(functionPattern);
    List<Row> out = new ArrayList<>();
    for (Function f : spark.catalog().listFunctions().collectAsList()) {
      if (p.matcher(f.name()).matches()) {
        out.add(RowFactory.create(null, f.database(), f.name(), f.description() == null ? "" : f.description(),
            DatabaseMetaData.functionResultUnknown, f.className()));
      }
    }
    return out;
  }

  static List<Row> typeInfo() {
    List<Row> out = new ArrayList<>();
    for (DataType t : new DataType[] {DataTypes.BooleanType, DataTypes.ByteType, DataTypes.ShortType,
        DataTypes.IntegerType, DataTypes.LongType, DataTypes.FloatType, DataTypes.DoubleType, DataTypes.StringType,
        DataTypes.BinaryType, DataTypes.createDecimalType(38, 18), DataTypes.DateType, DataTypes.TimestampType,
        DataTypes.createArrayType(DataTypes.StringType), DataTypes.createMapType(DataTypes.StringType,
        DataTypes.StringType), new StructType()}) {
      String name = RowSets.typeId(t).name().replace("_TYPE", "").toUpperCase(Locale.ROOT);
      Integer size = columnSize(t);
      boolean numeric = size != null;
      out.add(RowFactory.create(name, RowSets.sqlType(t), size, null, null, null,
          (short) DatabaseMetaData.typeNullable, t.equals(DataTypes.StringType),
          (short) (t.equals(DataTypes.StringType) ? DatabaseMetaData.typeSearchable : DatabaseMetaData.typePredBasic),
          false, false, false, null, (short) 0, (short) (t instanceof DecimalType ? 38 : 0), null, null,
          numeric ? 10 : null));
    }
    return out;
  }
}
