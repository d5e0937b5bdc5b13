// flameprobe test target (tests/suite/doctor.rs): a JVM that does nothing.
// It prints "ready" once running, then waits for a line on stdin: "exit"
// (or end of input) ends it.

import java.io.BufferedReader;
import java.io.InputStreamReader;

public class Idle {
    public static void main(String[] args) throws Exception {
        System.out.println("ready");
        System.out.flush();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        String line;
        while ((line = in.readLine()) != null && !line.equals("exit")) {
        }
    }
}
