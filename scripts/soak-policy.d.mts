/** An event as Tencent sends it, with the fields the policy reads. */
export interface PolicyEvent {
	event: string;
	email: string;
	timestamp: number;
	bounceType?: string;
	fromDomain?: string;
}
/** A suppression entry's fields the policy decides. */
export interface ExpectedEntry {
	list: string;
	scope: string;
	eventCount: number;
	lastEventAt: string;
	expiresAt: string | null;
}
/** The entries the unique events of one address should give at `now` (default settings). */
export declare function expectedEntries(events: PolicyEvent[], now: number): ExpectedEntry[];
