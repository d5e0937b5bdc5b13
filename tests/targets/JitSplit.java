// flameprobe test target for JIT profiling (tests/suite/jit_record.rs):
// spends 75% of its CPU time in the chain main -> a1 -> a2 -> a3 -> hotA
// and 25% in main -> b1 -> hotB: hotA and hotB are the same code, given
// 3 and 1 units of work per round (a count, not the clock, so that the
// split holds when the CPU is shared). Rounds are short, so main's loop is
// hot enough to be compiled on stack. Run with -XX:+PreserveFramePointer
// and -XX:CompileCommand=dontinline,JitSplit::* so every method keeps its
// own frame. Prints "ready" after a warm-up of 3 s, runs for the number of
// seconds given as its argument (default 600), then exits.

public class JitSplit {
    static final int UNIT = 4000;
    static long sink;

    static long hotA(int n) {
        long x = 1;
        for (int i = 0; i < n; i++) {
            x = x * 31 + i;
        }
        return x;
    }

    static long hotB(int n) {
        long x = 1;
        for (int i = 0; i < n; i++) {
            x = x * 31 + i;
        }
        return x;
    }

    static long a3(int n) {
        return hotA(n) + 3;
    }

    static long a2(int n) {
        return a3(n) + 2;
    }

    static long a1(int n) {
        return a2(n) + 1;
    }

    static long b1(int n) {
        return hotB(n) + 1;
    }

    public static void main(String[] args) {
        long seconds = args.length > 0 ? Long.parseLong(args[0]) : 600;
        long warm = System.nanoTime() + 3_000_000_000L;
        long end = warm + seconds * 1_000_000_000L;
        boolean ready = false;
        while (true) {
            long t = System.nanoTime();
            if (t >= end) {
                break;
            }
            if (!ready && t >= warm) {
                System.out.println("ready " + sink);
                System.out.flush();
                ready = true;
            }
            sink += a1(3 * UNIT);
            sink += b1(UNIT);
        }
        System.exit(0);
    }
}
