import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
	domainKey,
	domainOf,
	emailProblem,
	isDomainName,
	MAX_EMAIL_LENGTH,
	mailboxProblem,
	normalizeEmail,
	senderDomain,
} from "../../src/email";

/** Code points in hex, so that a failure shows which of two look-alike strings is which. */
function codePoints(text: string): string[] {
	return Array.from(text, (char) => (char.codePointAt(0) ?? 0).toString(16));
}

describe("normalizeEmail", () => {
	it("trims, lower-cases and keeps everything else", () => {
		expect(normalizeEmail("  Example@Example.COM ")).toBe("example@example.com");
		expect(normalizeEmail("\t\nA+Tag@B.C\r\n")).toBe("a+tag@b.c");
		expect(normalizeEmail("O'Brien@Example.ie")).toBe("o'brien@example.ie");
	});

	it("composes combining accents (NFC) before lower-casing", () => {
		// "E" + COMBINING ACUTE ACCENT becomes the single code point é.
		const decomposed = "Jos\u0045\u0301@B\u0075\u0308cher.DE";
		expect(codePoints(normalizeEmail(decomposed))).toEqual(codePoints("jos\u00e9@b\u00fccher.de"));
		expect(codePoints(normalizeEmail("jose\u0301@example.com"))).toEqual(
			codePoints("jos\u00e9@example.com"),
		);
	});

	it("composes what lower-casing makes composable (T + U+0308 gives ẗ)", () => {
		expect(codePoints(normalizeEmail("T\u0308@example.com"))).toEqual(
			codePoints("\u1e97@example.com"),
		);
	});

	it("lower-cases non-ASCII letters", () => {
		expect(normalizeEmail("ÄÖÜ@BÜCHER.DE")).toBe("äöü@bücher.de");
		expect(normalizeEmail("ΔΟΚΙΜΗ@ΠΑΡΑΔΕΙΓΜΑ.ΔΟΚΙΜΗ")).toBe("δοκιμη@παραδειγμα.δοκιμη");
	});

	it("leaves inner white space alone (emailProblem refuses it)", () => {
		expect(normalizeEmail(" a b@c.d ")).toBe("a b@c.d");
	});

	it("is idempotent", () => {
		for (const raw of ["  Example@Example.COM ", "Jos\u0045\u0301@example.com", "ÄÖÜ@BÜCHER.DE"]) {
			const once = normalizeEmail(raw);
			expect(normalizeEmail(once)).toBe(once);
		}
	});

	// NFC must come after lower-casing: lower-casing can produce a sequence that NFC composes.
	// "T" + U+0308 has no precomposed capital form, but its lower case "t" + U+0308 composes to
	// U+1E97 (ẗ). Normalised first, the result would be neither NFC nor equal to the normal form
	// of the canonically equivalent lower-case input.
	it("gives NFC output even when lower-casing creates a composable pair", () => {
		const fromUpper = normalizeEmail("T\u0308@example.com");
		expect(codePoints(fromUpper)).toEqual(codePoints("\u1e97@example.com"));
		expect(codePoints(fromUpper)).toEqual(codePoints(normalizeEmail("t\u0308@example.com")));
		expect(codePoints(normalizeEmail(fromUpper))).toEqual(codePoints(fromUpper));
		// Greek capital iota with dialytika + acute: its lower case composes to U+0390.
		expect(codePoints(normalizeEmail("\u03aa\u0301@example.com"))).toEqual(
			codePoints("\u0390@example.com"),
		);
	});
});

describe("normalizeEmail's ASCII shortcut", () => {
	it("gives what trim, lower-case and NFC give, for any string", () => {
		const text = fc.oneof(
			fc.string({ unit: "binary", maxLength: 40 }),
			fc.string({
				unit: fc.constantFrom("A", "a", " ", "@", "\u0308", "\u0301", "T", "\u03aa", "É"),
				maxLength: 40,
			}),
		);
		fc.assert(
			fc.property(text, (raw) => {
				expect(normalizeEmail(raw)).toBe(raw.trim().toLowerCase().normalize("NFC"));
			}),
			{ numRuns: 2000 },
		);
	});
});

describe("emailProblem accepts plausible addresses", () => {
	it.each([
		["plain", "user@example.com"],
		["plus tag", "user+tag@example.com"],
		["apostrophe", "o'brien@example.ie"],
		["dots and hyphens", "first.last@sub-domain.example.co.uk"],
		["Unicode local part", "用户@example.com"],
		["accented local part", "josé@example.com"],
		["IDN domain", "a+tag@bücher.de"],
		["Unicode domain", "用户@例子.广告"],
		["punycode domain", "user@xn--bcher-kva.de"],
		["quoted local part containing @", '"a@b"@example.com'],
		["quoted local part containing a comma", '"a,b"@example.com'],
		["single-label domain", "root@localhost"],
		["emoji local part", "😀@example.com"],
		["label of 63 characters", `a@${"b".repeat(63)}.com`],
		["local part of 64 characters", `${"a".repeat(64)}@example.com`],
	])("%s: %s", (_, address) => {
		expect(emailProblem(address)).toBeNull();
		expect(mailboxProblem(address)).toBeNull();
	});

	it("accepts upper case, since it is not its job to normalise", () => {
		expect(emailProblem("User@Example.COM")).toBeNull();
	});

	it("accepts NFC-normalised combining accents", () => {
		expect(emailProblem(normalizeEmail("Jose\u0301@example.com"))).toBeNull();
	});

	it("accepts exactly MAX_EMAIL_LENGTH (254) characters", () => {
		expect(MAX_EMAIL_LENGTH).toBe(254);
		const address = `${"a".repeat(64)}@${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(61)}`;
		expect(address).toHaveLength(254);
		expect(emailProblem(address)).toBeNull();
	});
});

describe("emailProblem rejects", () => {
	const WHITE_SPACE = "must not contain white space or control characters";

	it("the empty string", () => {
		expect(emailProblem("")).toBe("must not be empty");
	});

	it("more than 254 characters", () => {
		const address = `${"a".repeat(64)}@${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(62)}`;
		expect(address).toHaveLength(255);
		expect(emailProblem(address)).toBe("must be at most 254 characters");
	});

	it("a local part longer than 64 characters", () => {
		expect(emailProblem(`${"a".repeat(65)}@example.com`)).toBe(
			"must have a local part of at most 64 characters",
		);
	});

	it("an address without @", () => {
		expect(emailProblem("no-at-sign")).toBe("must contain @");
		expect(emailProblem("example.com")).toBe("must contain @");
	});

	it("an empty local part", () => {
		expect(emailProblem("@example.com")).toBe("must have a local part before @");
	});

	it("an empty domain", () => {
		expect(emailProblem("user@")).toBe("must have a domain after @");
		expect(emailProblem('"a@b"@')).toBe("must have a domain after @");
	});

	it.each([
		["an empty label", "a@b..c"],
		["a leading dot", "a@.example.com"],
		["a trailing dot", "a@example.com."],
		["only a dot", "a@."],
		["a label of 64 characters", `a@${"b".repeat(64)}.com`],
	])("a domain with %s", (_, address) => {
		expect(emailProblem(address)).toBe("must have a domain of non-empty dot-separated labels");
	});

	it("refuses exactly the domains with an empty label or one over 63 characters", () => {
		const label = (length: number) =>
			fc.string({ unit: fc.constantFrom("b", "ü"), minLength: length, maxLength: length });
		const domain = fc.array(
			fc.oneof(
				label(0),
				label(1),
				label(62),
				label(63),
				label(64),
				fc.string({ unit: fc.constantFrom("b", "ü"), maxLength: 70 }),
			),
			{ minLength: 1, maxLength: 3 },
		);
		fc.assert(
			fc.property(domain, (labels) => {
				const address = `a@${labels.join(".")}`;
				// Empty and overlong addresses are refused for that reason first.
				fc.pre(address.length > 2 && address.length <= MAX_EMAIL_LENGTH);
				const bad = labels.some((part) => part.length === 0 || part.length > 63);
				const problem = emailProblem(address);
				if (bad) expect(problem).toBe("must have a domain of non-empty dot-separated labels");
				else expect(problem).not.toBe("must have a domain of non-empty dot-separated labels");
			}),
			{ numRuns: 2000 },
		);
	});

	it.each([
		["parenthesis", "a@exa(mple).com"],
		["IP literal", "a@[127.0.0.1]"],
		["comma", "a@example,com"],
		["quote", 'a@"example".com'],
		["colon", "a@example.com:25"],
		["angle bracket", "a@example.com>"],
	])("a domain with a special character (%s)", (_, address) => {
		expect(emailProblem(address)).toBe("must have a domain without special characters");
	});

	it.each([
		["a list of recipients", "a@example.com,b@example.com"],
		["a comma", "a,b@example.com"],
		["a list with a semicolon", "a@example.com;b@example.com"],
		["a display form", "<a@example.com"],
		["two @ unquoted", "a@b@example.com"],
		["a comment", "a(comment)@example.com"],
		["a colon", "group:a@example.com"],
		["a backslash", "a\\b@example.com"],
		["a lone quote", 'a"b@example.com'],
		["a local part that is a single quote", '"@example.com'],
		["a bracket", "a[1]@example.com"],
	])("as one mailbox, a local part with an unquoted special character (%s)", (_, address) => {
		expect(mailboxProblem(address)).toBe(
			'must not have (),:;<>@[\\]" in a local part unless it is quoted',
		);
		// Still plausible enough to find such an address among what is stored.
		expect(emailProblem(address)).toBeNull();
	});

	it.each([
		["space", "a b@example.com"],
		["space in domain", "a@exa mple.com"],
		["tab", "a\tb@example.com"],
		["new line", "a\nb@example.com"],
		["carriage return", "a\r@example.com"],
		["NUL", "a\u0000b@example.com"],
		["C0 control U+0001", "a\u0001b@example.com"],
		["C0 control U+001F", "a\u001fb@example.com"],
		["DEL U+007F", "a\u007fb@example.com"],
		["C1 control U+0080", "a\u0080b@example.com"],
		["C1 control NEL U+0085", "a\u0085b@example.com"],
		["C1 control U+009F", "a\u009fb@example.com"],
		["no-break space", "a\u00a0b@example.com"],
		["line separator U+2028", "a\u2028b@example.com"],
		["paragraph separator U+2029", "a\u2029b@example.com"],
		["byte order mark", "a\ufeffb@example.com"],
		["ideographic space", "a\u3000b@example.com"],
		["leading space (not trimmed here)", " a@example.com"],
	])("%s", (_, address) => {
		expect(emailProblem(address)).toBe(WHITE_SPACE);
	});

	it.each([
		["lone high surrogate", "a\ud800@example.com"],
		["lone low surrogate", "a@exam\udc00ple.com"],
		["reversed pair", "a\udc00\ud800@example.com"],
	])("a %s", (_, address) => {
		expect(emailProblem(address)).toBe("must be well-formed Unicode");
	});

	it("checks the cheap reasons in order: length before content", () => {
		expect(emailProblem(" ".repeat(255))).toBe("must be at most 254 characters");
		expect(emailProblem("\ud800 no at")).toBe("must be well-formed Unicode");
		expect(emailProblem("no at\n")).toBe(WHITE_SPACE);
	});
});

describe("domainOf", () => {
	it("returns what follows the last @, unchanged", () => {
		expect(domainOf("user@example.com")).toBe("example.com");
		expect(domainOf("User@Example.COM")).toBe("Example.COM");
		expect(domainOf('"a@b"@example.com')).toBe("example.com");
		expect(domainOf("a+tag@bücher.de")).toBe("bücher.de");
		expect(domainOf("@example.com")).toBe("example.com");
	});

	it("returns null without @ or without a domain", () => {
		expect(domainOf("no-at-sign")).toBeNull();
		expect(domainOf("")).toBeNull();
		expect(domainOf("user@")).toBeNull();
		expect(domainOf('"a@b"@')).toBeNull();
	});
});

describe("domainKey", () => {
	it("drops one trailing dot", () => {
		expect(domainKey("example.com.")).toBe("example.com");
		expect(domainKey("example.com")).toBe("example.com");
	});

	it("gives an IDN's ASCII form for its Unicode and punycode spellings", () => {
		expect(domainKey("bücher.de")).toBe("xn--bcher-kva.de");
		expect(domainKey("xn--bcher-kva.de.")).toBe("xn--bcher-kva.de");
		expect(domainKey("bücher.de.")).toBe("xn--bcher-kva.de");
		expect(domainKey("ｎｅｗｓ．example.com")).toBe("news.example.com");
		// A trailing ideographic full stop is a trailing dot once mapped.
		expect(domainKey("bücher.de。")).toBe("xn--bcher-kva.de");
	});

	it("keeps domains that IDNA tells apart apart (final sigma, sharp s)", () => {
		expect(domainKey("οδος.gr")).not.toBe(domainKey("οδοσ.gr"));
		expect(domainKey("faß.de")).not.toBe(domainKey("fass.de"));
	});

	it("compares as it is what the host parser would read as more than a name, or refuses", () => {
		for (const odd of ["bücher.de:80", "news@bücher.de", "bü%41.de", "b\u00fc/x", "bü<cher.de"]) {
			expect(domainKey(odd)).toBe(odd);
		}
		expect(domainKey("xn--zz.de")).toBe("xn--zz.de");
	});

	it("leaves plain ASCII names as they are, without parsing", () => {
		expect(domainKey("127.1")).toBe("127.1");
		expect(domainKey("news.example.com")).toBe("news.example.com");
	});
});

describe("isDomainName", () => {
	it("refuses what could not be a scope key: white space, @, /, * and a comma", () => {
		expect(isDomainName("news.example.com")).toBe(true);
		for (const odd of ["a b.com", "a@b.com", "a/b.com", "*.b.com", "a,b.com", ""]) {
			expect(isDomainName(odd), odd).toBe(false);
		}
	});

	it("accepts a name of up to 253 characters, the longest DNS holds", () => {
		const name = (length: number) => `${"a.".repeat((length - 3) / 2)}com`;
		expect(name(253)).toHaveLength(253);
		expect(isDomainName(name(253))).toBe(true);
		expect(isDomainName(`a${name(253)}`)).toBe(false);
	});
});

describe("senderDomain", () => {
	it.each([
		["news@example.com", "example.com"],
		["news <news@mail.example.com>", "mail.example.com"],
		['"news, weekly" <news@example.org>', "example.org"],
	])("finds the domain of the sender's address in %j", (from, domain) => {
		expect(senderDomain(from)).toBe(domain);
	});

	it.each(["news <news@example.com> (list)", "news", "news <not an address>"])(
		"finds none in %j, which is no single sender",
		(from) => {
			expect(senderDomain(from)).toBeNull();
		},
	);
});
