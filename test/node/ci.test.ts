import { describe, expect, it } from "vitest";
import { summaryLine } from "../../scripts/ci-summary.mjs";

const report = (numPassedTests: number, numFailedTests: number, numFailedTestSuites = 0) => ({
	numPassedTests,
	numFailedTests,
	numFailedTestSuites,
	success: numFailedTests === 0 && numFailedTestSuites === 0,
});

describe(".ci/run's last line", () => {
	it("is vitest's count plus the other failed steps", () => {
		expect(summaryLine(report(1350, 0), 0, 0)).toBe("1350 passed, 0 failed");
		expect(summaryLine(report(1348, 2), 1, 0)).toBe("1348 passed, 2 failed");
		expect(summaryLine(report(1350, 0), 0, 1)).toBe("1350 passed, 1 failed");
	});

	it("counts a file that failed to load, and a run that wrote no report", () => {
		expect(summaryLine(report(1300, 0, 1), 1, 0)).toBe("1300 passed, 1 failed");
		expect(summaryLine(null, 1, 0)).toBe("0 passed, 1 failed");
		expect(summaryLine(null, 1, 1)).toBe("0 passed, 2 failed");
		// Each file that failed to load counts; a missing report counts even if vitest exited 0.
		expect(summaryLine(report(1300, 0, 2), 1, 0)).toBe("1300 passed, 2 failed");
		expect(summaryLine(null, 0, 0)).toBe("0 passed, 1 failed");
	});

	it("never says 0 failed when vitest failed: an unhandled error fails no test", () => {
		// What vitest 5 writes, and exits 1 with, when a test leaves an unhandled rejection.
		expect(summaryLine(report(1350, 0), 1, 0)).toBe("1350 passed, 1 failed");
	});
});
