// pgJDBC against Weir: DatabaseMetaData and prepared statements.
//
//   java -cp /usr/share/java/postgresql.jar tests/clients/JdbcTest.java <port> [host]
//
// (Debian's libpostgresql-jdbc-java; Java 11+ runs a single source file directly.)
// Prints one line per check and exits 1 if any check failed, 2 on an unexpected exception.
//
// What pgJDBC does that the server must handle: SSLRequest, startup parameters DateStyle=ISO,
// TimeZone=<JVM zone>, extra_float_digits=2, then `SET extra_float_digits = 3` and
// `SET application_name = ...` as statements; every statement through Parse/Bind/Execute;
// BEGIN pipelined with the next statement when autocommit is off; a batch as several
// Bind/Execute under one Sync; varchar (1043) for strings, int8 and numeric parameters in binary;
// from the fifth execution of a PreparedStatement a named statement (S_n) with a Describe, then
// binary results for int8/numeric/timestamptz; getPrimaryKeys uses
// information_schema._pg_expandarray.

import java.math.BigDecimal;
import java.sql.*;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.*;

public class JdbcTest {
    static int failures = 0;
    static int checks = 0;

    static void check(boolean ok, String what) {
        checks++;
        if (ok) {
            System.out.println("ok   " + what);
        } else {
            failures++;
            System.out.println("FAIL " + what);
        }
    }

    static void eq(Object got, Object want, String what) {
        check(Objects.equals(got, want), what + ": got " + got + ", want " + want);
    }

    static void eqDec(BigDecimal got, BigDecimal want, String what) {
        boolean same = (got == null && want == null) || (got != null && want != null && got.compareTo(want) == 0);
        check(same, what + ": got " + got + ", want " + want);
    }

    static void eqTime(OffsetDateTime got, OffsetDateTime want, String what) {
        boolean same = (got == null && want == null) || (got != null && want != null && got.isEqual(want));
        check(same, what + ": got " + got + ", want " + want);
    }

    record Row(long id, Integer n, String name, BigDecimal price, OffsetDateTime ts, Boolean flag) {}

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: JdbcTest <port> [host]");
            System.exit(64);
        }
        String host = args.length > 1 ? args[1] : "127.0.0.1";
        String url = "jdbc:postgresql://" + host + ":" + args[0] + "/weir"
                + "?user=weir&sslmode=prefer&connectTimeout=10&socketTimeout=60&loginTimeout=20";
        String t = "t_jdbc_" + UUID.randomUUID().toString().replace("-", "").substring(0, 8);
        try {
            run(url, t);
        } catch (Throwable e) {
            System.out.println("FAIL unexpected exception: " + e);
            e.printStackTrace(System.out);
            System.exit(2);
        }
        System.out.println("JdbcTest finished: checks=" + checks + " failures=" + failures);
        System.exit(failures == 0 ? 0 : 1);
    }

    static void run(String url, String t) throws SQLException {
        try (Connection conn = DriverManager.getConnection(url)) {
            DatabaseMetaData md = conn.getMetaData();
            eq(md.getDatabaseProductName(), "PostgreSQL", "product name");
            check(md.getDatabaseMajorVersion() >= 10, "server major version >= 10: " + md.getDatabaseProductVersion());

            try (Statement st = conn.createStatement()) {
                st.execute("CREATE TABLE " + t + " (id bigint PRIMARY KEY, n int, name varchar(40), "
                        + "price numeric(20,9), ts timestamptz, flag boolean)");
                try (ResultSet rs = st.executeQuery("SELECT current_schema()")) {
                    check(rs.next(), "current_schema() returns a row");
                    eq(rs.getString(1), "public", "current_schema()");
                }
            }

            metadata(md, t);
            List<Row> rows = insert(conn, t);
            select(conn, t, rows);
            errors(conn, t);

            try (Statement st = conn.createStatement()) {
                st.execute("DROP TABLE " + t);
            }
            try (ResultSet rs = md.getTables(null, "public", t, new String[] {"TABLE"})) {
                check(!rs.next(), "getTables no longer lists the dropped table");
            }
        }
    }

    static void metadata(DatabaseMetaData md, String t) throws SQLException {
        try (ResultSet rs = md.getTables(null, "public", t, new String[] {"TABLE"})) {
            check(rs.next(), "getTables finds " + t);
            eq(rs.getString("TABLE_SCHEM"), "public", "getTables TABLE_SCHEM");
            eq(rs.getString("TABLE_NAME"), t, "getTables TABLE_NAME");
            eq(rs.getString("TABLE_TYPE"), "TABLE", "getTables TABLE_TYPE");
            check(!rs.next(), "getTables returns exactly one row");
        }
        try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE"})) {
            boolean found = false;
            List<String> system = new ArrayList<>();
            while (rs.next()) {
                found |= t.equals(rs.getString("TABLE_NAME"));
                if (!"public".equals(rs.getString("TABLE_SCHEM"))) system.add(rs.getString("TABLE_SCHEM") + "." + rs.getString("TABLE_NAME"));
            }
            check(found, "getTables(%) lists " + t);
            check(system.isEmpty(), "getTables(public, %) lists only public tables: " + system);
        }

        // name, TYPE_NAME, java.sql.Types, NULLABLE
        Object[][] want = {
            {"id", "int8", Types.BIGINT, DatabaseMetaData.columnNoNulls},
            {"n", "int4", Types.INTEGER, DatabaseMetaData.columnNullable},
            {"name", "varchar", Types.VARCHAR, DatabaseMetaData.columnNullable},
            {"price", "numeric", Types.NUMERIC, DatabaseMetaData.columnNullable},
            {"ts", "timestamptz", Types.TIMESTAMP, DatabaseMetaData.columnNullable},
            {"flag", "bool", Types.BIT, DatabaseMetaData.columnNullable},
        };
        try (ResultSet rs = md.getColumns(null, "public", t, "%")) {
            for (int i = 0; i < want.length; i++) {
                String col = (String) want[i][0];
                check(rs.next(), "getColumns row " + (i + 1) + " (" + col + ")");
                eq(rs.getString("TABLE_NAME"), t, "getColumns TABLE_NAME");
                eq(rs.getString("COLUMN_NAME"), col, "getColumns COLUMN_NAME " + (i + 1));
                eq(rs.getString("TYPE_NAME"), want[i][1], "getColumns TYPE_NAME " + col);
                eq(rs.getInt("DATA_TYPE"), want[i][2], "getColumns DATA_TYPE " + col);
                eq(rs.getInt("NULLABLE"), want[i][3], "getColumns NULLABLE " + col);
                eq(rs.getInt("ORDINAL_POSITION"), i + 1, "getColumns ORDINAL_POSITION " + col);
                if (col.equals("name")) {
                    eq(rs.getInt("COLUMN_SIZE"), 40, "getColumns COLUMN_SIZE varchar(40)");
                }
                if (col.equals("price")) {
                    eq(rs.getInt("COLUMN_SIZE"), 20, "getColumns COLUMN_SIZE numeric(20,9)");
                    eq(rs.getInt("DECIMAL_DIGITS"), 9, "getColumns DECIMAL_DIGITS numeric(20,9)");
                }
            }
            check(!rs.next(), "getColumns returns exactly " + want.length + " rows");
        }

        try (ResultSet rs = md.getPrimaryKeys(null, "public", t)) {
            check(rs.next(), "getPrimaryKeys returns a row");
            eq(rs.getString("TABLE_NAME"), t, "getPrimaryKeys TABLE_NAME");
            eq(rs.getString("COLUMN_NAME"), "id", "getPrimaryKeys COLUMN_NAME");
            eq(rs.getInt("KEY_SEQ"), 1, "getPrimaryKeys KEY_SEQ");
            eq(rs.getString("PK_NAME"), t + "_pkey", "getPrimaryKeys PK_NAME");
            check(!rs.next(), "getPrimaryKeys returns exactly one row");
        }
    }

    static List<Row> insert(Connection conn, String t) throws SQLException {
        List<Row> rows = new ArrayList<>();
        OffsetDateTime base = OffsetDateTime.of(2026, 11, 23, 8, 0, 0, 500_000_000, ZoneOffset.UTC);
        for (int i = 1; i <= 5; i++) {
            rows.add(new Row(10_000_000_000L + i, i * 1000, "row-" + i + " ü",
                    new BigDecimal("1234567890.123456789").multiply(BigDecimal.valueOf(i)),
                    // Given at +02:00: the same instant as base + i minutes.
                    base.plusMinutes(i).withOffsetSameInstant(ZoneOffset.ofHours(2)),
                    i % 2 == 1));
        }
        rows.add(new Row(10_000_000_006L, null, null, null, null, null));

        String sql = "INSERT INTO " + t + " (id, n, name, price, ts, flag) VALUES (?, ?, ?, ?, ?, ?)";
        conn.setAutoCommit(false);  // BEGIN is pipelined with the batch
        try (PreparedStatement ps = conn.prepareStatement(sql)) {
            for (Row r : rows.subList(0, 4)) {
                bind(ps, r);
                ps.addBatch();
            }
            int[] counts = ps.executeBatch();
            eq(Arrays.toString(counts), "[1, 1, 1, 1]", "executeBatch update counts");
        }
        conn.commit();
        conn.setAutoCommit(true);

        try (PreparedStatement ps = conn.prepareStatement(sql)) {
            for (Row r : rows.subList(4, rows.size())) {
                bind(ps, r);
                eq(ps.executeUpdate(), 1, "executeUpdate count for id " + r.id());
            }
        }

        // A rolled-back insert leaves nothing behind.
        conn.setAutoCommit(false);
        try (PreparedStatement ps = conn.prepareStatement(sql)) {
            bind(ps, new Row(99, 99, "rolled back", BigDecimal.ONE, base, true));
            ps.executeUpdate();
        }
        conn.rollback();
        conn.setAutoCommit(true);
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT count(*) FROM " + t + " WHERE id = 99")) {
            rs.next();
            eq(rs.getLong(1), 0L, "rollback discarded the insert");
        }
        return rows;
    }

    static void bind(PreparedStatement ps, Row r) throws SQLException {
        ps.setLong(1, r.id());
        if (r.n() == null) ps.setNull(2, Types.INTEGER); else ps.setInt(2, r.n());
        if (r.name() == null) ps.setNull(3, Types.VARCHAR); else ps.setString(3, r.name());
        if (r.price() == null) ps.setNull(4, Types.NUMERIC); else ps.setBigDecimal(4, r.price());
        if (r.ts() == null) ps.setNull(5, Types.TIMESTAMP_WITH_TIMEZONE); else ps.setObject(5, r.ts());
        if (r.flag() == null) ps.setNull(6, Types.BOOLEAN); else ps.setBoolean(6, r.flag());
    }

    static void select(Connection conn, String t, List<Row> rows) throws SQLException {
        String sql = "SELECT id, n, name, price, ts, flag FROM " + t + " WHERE id >= ? AND ts < ? ORDER BY id";
        try (PreparedStatement ps = conn.prepareStatement(sql)) {
            for (int run = 1; run <= 8; run++) {
                // Vary the parameters so every execution (unnamed, then named S_n + binary) is checked.
                long minId = 10_000_000_001L + (run % 3);
                OffsetDateTime before = OffsetDateTime.of(2026, 11, 23, 8, 4, 0, 0, ZoneOffset.UTC).plusMinutes(run % 2);
                ps.setLong(1, minId);
                ps.setObject(2, before);
                List<Row> want = new ArrayList<>();
                for (Row r : rows) {
                    if (r.id() >= minId && r.ts() != null && r.ts().isBefore(before)) want.add(r);
                }
                String tag = "select run " + run;
                try (ResultSet rs = ps.executeQuery()) {
                    ResultSetMetaData meta = rs.getMetaData();
                    eq(meta.getColumnTypeName(1), "int8", tag + " column 1 type");
                    eq(meta.getColumnTypeName(4), "numeric", tag + " column 4 type");
                    eq(meta.getColumnTypeName(5), "timestamptz", tag + " column 5 type");
                    int i = 0;
                    while (rs.next()) {
                        if (i >= want.size()) {
                            check(false, tag + ": unexpected extra row id " + rs.getLong(1));
                            i++;
                            continue;
                        }
                        Row w = want.get(i++);
                        eq(rs.getLong("id"), w.id(), tag + " id");
                        eq(rs.getInt("n"), w.n(), tag + " n");
                        eq(rs.getString("name"), w.name(), tag + " name");
                        eqDec(rs.getBigDecimal("price"), w.price(), tag + " price");
                        eqTime(rs.getObject("ts", OffsetDateTime.class), w.ts(), tag + " ts");
                        eq(rs.getBoolean("flag"), w.flag(), tag + " flag");
                    }
                    eq(i, want.size(), tag + " row count");
                }
            }
            check(ps.unwrap(org.postgresql.PGStatement.class).isUseServerPrepare(),
                    "statement is server-prepared after 8 executions");
        }

        // NULLs come back as SQL NULL, a varchar parameter against a varchar column.
        try (PreparedStatement ps = conn.prepareStatement("SELECT n, name, price, ts, flag FROM " + t + " WHERE id = ?")) {
            ps.setLong(1, 10_000_000_006L);
            try (ResultSet rs = ps.executeQuery()) {
                check(rs.next(), "row with NULLs found");
                for (int c = 1; c <= 5; c++) {
                    check(rs.getObject(c) == null, "column " + c + " is NULL");
                }
            }
        }
        try (PreparedStatement ps = conn.prepareStatement("SELECT id FROM " + t + " WHERE name = ?")) {
            ps.setString(1, "row-3 ü");
            try (ResultSet rs = ps.executeQuery()) {
                check(rs.next(), "varchar parameter matches");
                eq(rs.getLong(1), 10_000_000_003L, "row found by name");
                check(!rs.next(), "only one row by name");
            }
        }
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT count(*), sum(price) FROM " + t)) {
            check(rs.next(), "aggregate row");
            eq(rs.getLong(1), 6L, "count(*)");
            BigDecimal sum = BigDecimal.ZERO;
            for (Row r : rows) if (r.price() != null) sum = sum.add(r.price());
            eqDec(rs.getBigDecimal(2), sum, "sum(price)");
        }
    }

    static void errors(Connection conn, String t) throws SQLException {
        try (Statement st = conn.createStatement()) {
            st.executeQuery("SELECT * FROM " + t + "_missing");
            check(false, "query on a missing table raised an error");
        } catch (SQLException e) {
            eq(e.getSQLState(), "42P01", "SQLSTATE for a missing table");
        }
        try (PreparedStatement ps = conn.prepareStatement("SELECT ?::int + 1")) {
            ps.setInt(1, 41);
            try (ResultSet rs = ps.executeQuery()) {
                check(rs.next(), "session usable after the error");
                eq(rs.getInt(1), 42, "SELECT ?::int + 1");
            }
        }
    }
}
