// flameprobe test target for JIT symbolization (tests/suite/jit.rs): hot
// methods for HotSpot to compile. Run with -XX:-BackgroundCompilation so a
// method that reaches the compile threshold waits for its compiled code;
// "ready" then means fib, Inner.mix and the lambda are compiled. Then it
// waits for a line on stdin: "exit" (or end of input) ends it.

import java.io.BufferedReader;
import java.io.InputStreamReader;

public class JitHot {
    static long fib(int n) {
        return n < 2 ? n : fib(n - 1) + fib(n - 2);
    }

    static final class Inner {
        private long state = 1;

        long mix(long value, String salt) {
            state = state * 31 + value + salt.length();
            return state ^ (state >>> 7);
        }
    }

    public static void main(String[] args) throws Exception {
        Inner inner = new Inner();
        long[] acc = new long[1];
        Runnable step = () -> acc[0] += fib(10);
        long sum = 0;
        for (int i = 0; i < 30000; i++) {
            sum += fib(12);
            sum += inner.mix(i, "salt");
            step.run();
        }
        System.out.println("ready " + (sum + acc[0]));
        System.out.flush();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        String line;
        while ((line = in.readLine()) != null) {
            if (line.equals("exit")) {
                break;
            }
        }
        System.exit(0);
    }
}
