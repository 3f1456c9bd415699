// The last line of .ci/run, "N passed, M failed": `node scripts/ci-summary.mjs <vitest JSON report>
// <vitest's exit status> <other failed steps>`. Runs on whatever Node the CI machine has.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/**
 * The count from vitest's JSON report (null when it wrote none), vitest's exit status and the
 * number of other steps that failed. Whatever made vitest fail counts at least once, so the line
 * never says "0 failed" for a run that failed.
 */
export function summaryLine(report, testStatus, otherFailures) {
	const passed = report?.numPassedTests ?? 0;
	// A file that fails to load fails no single test; nor does an unhandled error or rejection,
	// which vitest reports with `success: true` and exit status 1.
	let failed = report
		? report.numFailedTests || (report.success ? 0 : Math.max(1, report.numFailedTestSuites))
		: 1;
	if (testStatus !== 0 && failed === 0) failed = 1;
	return `${passed} passed, ${failed + otherFailures} failed`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
	const [file, testStatus, otherFailures] = process.argv.slice(2);
	let report = null;
	try {
		report = JSON.parse(readFileSync(file, "utf8"));
	} catch {
		// vitest wrote no result (it could not start): counted as a failure of its own.
	}
	console.log(summaryLine(report, Number(testStatus), Number(otherFailures)));
}
