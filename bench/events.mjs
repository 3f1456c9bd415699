// Realistic Tencent Cloud SES callback bodies for the benchmarks, generated up front from a fixed
// seed so every run (and every target within a run) sends exactly the same sequence.

/** The event mix of a typical sending day, in percent. Bounces split 3 soft : 2 hard. */
const MIX = [
	["delivered", 70],
	["open", 15],
	["click", 5],
	["soft_bounce", 3],
	["hard_bounce", 2],
	["deferred", 3],
	["unsubscribe", 1],
	["spamreport", 1],
];

/** Share of requests that are exact redeliveries of an earlier body (Tencent retries). */
const REPEAT_SHARE = 0.03;

/** mulberry32: a small seeded PRNG, so the bodies are the same on every run. */
export function prng(seed) {
	let a = seed >>> 0;
	return () => {
		a = (a + 0x6d2b79f5) >>> 0;
		let t = a;
		t = Math.imul(t ^ (t >>> 15), t | 1);
		t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
		return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
	};
}

const SUBJECTS = [
	"=?UTF-8?B?5oKo55qE6K6i5Y2V5bey5Y+R6LSn?=",
	"Your receipt for order 10442",
	"=?GBK?B?0enWpMLr?=",
	"Weekly digest: 12 new articles",
];
const USER_AGENT =
	"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148";
const FROM_DOMAINS = ["mail.example.com", "news.example.com", "notify.example.org"];

/** The address of the i-th generated event: every generated event has its own address. */
const address = (i) => `recipient.${i}@customer${i % 97}.example.net`;

/**
 * One event object of the given kind, shaped like the samples of Tencent's documentation
 * (test/fixtures/tencent-doc-samples.jsonl) with the optional fields a real account sends.
 */
export function makeEvent(kind, i, email, now, random) {
	const fromDomain = FROM_DOMAINS[i % FROM_DOMAINS.length];
	const sent = now - 60 - Math.floor(random() * 3600);
	const event = {
		event: kind.endsWith("_bounce") ? "bounce" : kind,
		email,
		bulkId: `qcloudses-30-251200670-date-20261122${String(i % 100000).padStart(6, "0")}-8jolHvR2XcXC1`,
		timestamp: sent + 1 + Math.floor(random() * 50),
		reason: "",
		bounceType: "",
		username: "251200670",
		from: `noreply@${fromDomain}`,
		fromDomain,
		templateId: 123456 + (i % 5),
		subject: SUBJECTS[i % SUBJECTS.length],
		messageId: `${i.toString(16).padStart(8, "0")}-7704-48a8-af36-2b9e83e767ec@${fromDomain}`,
		sentTimestamp: sent,
		"X-Tencentcloudses-Cb-Custom": `campaign-${i % 13}`,
	};
	switch (kind) {
		case "open":
			event.useragent = USER_AGENT;
			break;
		case "click":
			event.useragent = USER_AGENT;
			event.link = `https://www.example.com/offers/${i % 31}?utm_source=ses`;
			break;
		case "soft_bounce":
			event.bounceType = "soft_bounce";
			event.reason = "452 4.2.2 Mailbox full";
			break;
		case "hard_bounce":
			event.bounceType = "hard_bounce";
			event.reason = "550 5.1.1 recipient is not exist";
			break;
		case "deferred":
			event.reason = "421 4.7.0 try again later";
			break;
	}
	return event;
}

/** An event kind drawn from {@link MIX} with `random` (a {@link prng}). */
export function pickKind(random) {
	let r = random() * 100;
	for (const [kind, share] of MIX) {
		r -= share;
		if (r < 0) return kind;
	}
	return MIX[0][0];
}

/**
 * `count` one-event callback bodies (JSON strings) in the mix above, each for its own address,
 * except that about REPEAT_SHARE of them repeat, byte for byte, a body sent 100 to 1000 requests
 * earlier (far enough back not to be in flight at the same time). Addresses are numbered from
 * `firstAddress`.
 */
export function callbackBodies(count, now, seed = 42, firstAddress = 0) {
	const random = prng(seed);
	const bodies = new Array(count);
	let fresh = firstAddress;
	for (let i = 0; i < count; i++) {
		if (i >= 1000 && random() < REPEAT_SHARE) {
			bodies[i] = bodies[i - 100 - Math.floor(random() * 900)];
			continue;
		}
		bodies[i] = JSON.stringify(makeEvent(pickKind(random), fresh, address(fresh), now, random));
		fresh++;
	}
	return bodies;
}
