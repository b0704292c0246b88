// pgJDBC logging in to Weir with SCRAM-SHA-256: the right password gets a session, a wrong one
// SQLSTATE 28P01. Run by test_auth.py and test_tls.py as
// `java -cp postgresql.jar JdbcAuth.java <host> <port> <password> [url parameters]`.
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.Properties;

public class JdbcAuth {
    public static void main(String[] args) throws Exception {
        // An optional fourth argument: URL parameters (`ssl=true&sslmode=require`).
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/weir" + (args.length > 3 ? "?" + args[3] : "");
        Properties wrong = new Properties();
        wrong.setProperty("user", "weir");
        wrong.setProperty("password", "not-the-password");
        try (Connection c = DriverManager.getConnection(url, wrong)) {
            System.out.println("FAIL a wrong password got a session");
            System.exit(1);
        } catch (SQLException e) {
            if (!"28P01".equals(e.getSQLState())) {
                System.out.println("FAIL wrong password: SQLSTATE " + e.getSQLState() + ": " + e.getMessage());
                System.exit(1);
            }
            System.out.println("ok wrong password: 28P01");
        }
        Properties right = new Properties();
        right.setProperty("user", "weir");
        right.setProperty("password", args[2]);
        try (Connection c = DriverManager.getConnection(url, right);
             ResultSet rs = c.createStatement().executeQuery("SELECT 40 + 2")) {
            rs.next();
            if (rs.getLong(1) != 42) {
                System.out.println("FAIL the query answered " + rs.getLong(1));
                System.exit(1);
            }
            System.out.println("ok right password: a session");
        }
    }
}
