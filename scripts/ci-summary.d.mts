/** The fields of vitest's JSON report that the count reads. */
export interface VitestReport {
	numPassedTests: number;
	numFailedTests: number;
	numFailedTestSuites: number;
	success: boolean;
}
/** "N passed, M failed" from vitest's report (null if none), its exit status and other failed steps. */
export declare function summaryLine(
	report: VitestReport | null,
	testStatus: number,
	otherFailures: number,
): string;
