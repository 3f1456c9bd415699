/** RFC 5321 caps a forward path at 256 octets including the angle brackets. */
export const MAX_EMAIL_LENGTH = 254;

/**
 * The form in which addresses are stored and matched: trimmed, lower-cased, Unicode NFC.
 * Lower-casing comes first: it can produce a pair that NFC composes (T + U+0308 gives ẗ).
 *
 * @example
 * normalizeEmail("  Example@Example.COM ") // "example@example.com"
 */
export function normalizeEmail(raw: string): string {
	const lower = raw.trim().toLowerCase();
	// ASCII is already in NFC: skipping ICU for it halves the cost of normalising a bulk check.
	return NON_ASCII.test(lower) ? lower.normalize("NFC") : lower;
}

// Any UTF-16 unit above U+007F, surrogates included.
const NON_ASCII = /[\u0080-\uffff]/;

// White space, C0/C1 controls, line and paragraph separators: never part of an address.
const FORBIDDEN = /[\s\p{Cc}\p{Zl}\p{Zp}]/u;

/** RFC 5322's specials, which no address's domain holds (a domain literal's brackets included). */
const DOMAIN_SPECIAL = /[@()<>[\]\\,;:"]/;

/**
 * Why a normalised address cannot be an email address, or null when it is plausible.
 * Deliberately lenient: plus tags, apostrophes, Unicode local parts, IDN domains and quoted
 * local parts all pass, because real mail systems deliver to them. This is the test for finding
 * what is stored (removing, erasing, filtering); what comes in to be stored or mailed must also
 * pass {@link mailboxProblem}.
 *
 * @example
 * emailProblem("a+tag@bücher.de") // null
 * emailProblem("no-at-sign")      // "must contain @"
 */
export function emailProblem(address: string): string | null {
	if (address.length === 0) return "must not be empty";
	if (address.length > MAX_EMAIL_LENGTH) return `must be at most ${MAX_EMAIL_LENGTH} characters`;
	if (!address.isWellFormed()) return "must be well-formed Unicode";
	if (FORBIDDEN.test(address)) return "must not contain white space or control characters";
	const at = address.lastIndexOf("@");
	if (at === -1) return "must contain @";
	const local = address.slice(0, at);
	const domain = address.slice(at + 1);
	if (local.length === 0) return "must have a local part before @";
	if (local.length > 64) return "must have a local part of at most 64 characters";
	if (domain.length === 0) return "must have a domain after @";
	if (!labelsFit(domain)) return "must have a domain of non-empty dot-separated labels";
	if (DOMAIN_SPECIAL.test(domain)) return "must have a domain without special characters";
	return null;
}

/**
 * Why a normalised address cannot be one mailbox, or null: {@link emailProblem}'s reasons, and
 * RFC 5322's specials other than the dot in a local part that is not quoted. Outside quotes they
 * end an address (a comma separates recipients, angle brackets enclose one), so such a local part
 * is a list or a display form. The test for an address that comes in to be stored (a callback, a
 * PUT, an import) or checked before a send; addresses stored before it keep being found by
 * {@link emailProblem}.
 *
 * @example
 * mailboxProblem("a@example.com,b@example.com") // 'must not have (),:;<>@[\]" in a local part…'
 */
export function mailboxProblem(address: string): string | null {
	const problem = emailProblem(address);
	if (problem) return problem;
	const local = address.slice(0, address.lastIndexOf("@"));
	return !isQuoted(local) && LOCAL_SPECIAL.test(local)
		? 'must not have (),:;<>@[\\]" in a local part unless it is quoted'
		: null;
}

const LOCAL_SPECIAL = /[(),:;<>@[\\\]"]/;

function isQuoted(local: string): boolean {
	return local.length >= 2 && local.startsWith('"') && local.endsWith('"');
}

/**
 * Whether every dot-separated label of a non-empty domain has 1 to 63 characters: one pass, since
 * `split` allocates an array and a string per label for each address of a bulk check.
 */
function labelsFit(domain: string): boolean {
	let length = 0;
	for (let i = 0; i < domain.length; i++) {
		if (domain.charCodeAt(i) !== DOT) length++;
		else if (length === 0) return false;
		else length = 0;
		if (length > 63) return false;
	}
	return length > 0;
}

const DOT = 46;

/** At most 253 characters: the longest name DNS can hold. */
export const MAX_DOMAIN_LENGTH = 253;
/** What a sender domain may hold wherever it is a key: no white space, `@`, `/`, `*` or `,`. */
export const DOMAIN_NAME = /^[^\s@/*,]+$/u;

/**
 * Whether a trimmed, lower-cased sender domain is one the API can name: what the lookup's, the
 * check's and the filters' `fromDomain` and the scope of a PUT or an import accept. A scope outside
 * it could never equal a lookup's `fromDomain`, nor be imported again from an export.
 *
 * @example
 * isDomainName("news.example.com")  // true
 * isDomainName("news@example.com")  // false
 */
export function isDomainName(domain: string): boolean {
	return domain.length > 0 && domain.length <= MAX_DOMAIN_LENGTH && DOMAIN_NAME.test(domain);
}

/**
 * Whether a trimmed, lower-cased sender domain from an event can be a scope: a name the API can
 * name ({@link isDomainName}) that an address's domain could be, without RFC 5322's specials. A
 * Tencent fromDomain such as `example.com>` (the end of a display form) or `[news.example.com]`
 * would be a scope that no lookup for the sender's real domain matches.
 *
 * @example
 * isSenderDomain("news.example.com") // true
 * isSenderDomain("example.com>")     // false
 */
export function isSenderDomain(domain: string): boolean {
	return isDomainName(domain) && !DOMAIN_SPECIAL.test(domain);
}

/**
 * The domain of the sender's address in a normalised `from`, which may come in display form
 * (`news <news@example.com>`); null unless that address is plausible, so that an unsubscribe is
 * never scoped to a domain no sender has (it applies to every sender instead).
 */
export function senderDomain(from: string): string | null {
	const address = DISPLAY_FORM.exec(from)?.[1]?.trim() ?? from;
	return mailboxProblem(address) === null ? domainOf(address) : null;
}

const DISPLAY_FORM = /<([^<>]*)>$/;

/**
 * A callback's `from` in the form it is stored: an address normalised as {@link normalizeEmail};
 * in display form (`Name <a@example.com>`) only the address is, since lower-casing the name would
 * mangle it (an encoded-word's base64 cannot be lower-cased back).
 *
 * @example
 * normalizeFrom(" News <News@Example.com>") // "News <news@example.com>"
 */
export function normalizeFrom(from: string): string {
	const trimmed = from.trim();
	const match = DISPLAY_FORM.exec(trimmed);
	if (!match) return normalizeEmail(trimmed);
	return `${trimmed.slice(0, match.index)}<${normalizeEmail(match[1] ?? "")}>`;
}

/** The domain of an address (after its last `@`), or null. */
export function domainOf(address: string): string | null {
	const at = address.lastIndexOf("@");
	const domain = at === -1 ? "" : address.slice(at + 1);
	return domain === "" ? null : domain;
}

/**
 * The form in which two sender domains (an entry's scope and a lookup's `fromDomain`) are
 * compared: one trailing dot dropped (`example.com.` is `example.com`), and a domain with
 * non-ASCII characters or a punycode label mapped by UTS #46 to its ASCII form, as the URL host
 * parser does (`bücher.de` and `XN--BCHER-KVA.DE` are `xn--bcher-kva.de`; fullwidth letters and
 * dots become ASCII). Stored scopes keep the spelling they came in: this only decides equality, so
 * scopes stored before it still match every spelling of their domain. Expects a string already
 * trimmed and lower-cased; anything the host parser refuses, or that it would read as more than
 * a host name, is compared as it is.
 *
 * @example
 * domainKey("bücher.de.") // "xn--bcher-kva.de"
 */
export function domainKey(domain: string): string {
	const bare = domain.endsWith(".") ? domain.slice(0, -1) : domain;
	// Only a name with non-ASCII characters or a punycode label needs the IDNA mapping.
	if (!(NON_ASCII.test(bare) || bare.includes("xn--")) || NOT_A_HOST.test(bare)) return bare;
	try {
		const host = new URL(`http://${bare}/`).hostname;
		return host.endsWith(".") ? host.slice(0, -1) : host;
	} catch {
		return bare;
	}
}

// What the URL parser would take as a port, userinfo, path, query, fragment or escape, not a name.
const NOT_A_HOST = /[\s:@/\\?#%[\]]/;
