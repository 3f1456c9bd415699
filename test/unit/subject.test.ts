import { describe, expect, it } from "vitest";
import { decodeSubject } from "../../src/tencent/subject";

describe("decodeSubject decodes RFC 2047 encoded-words", () => {
	it("B (base64)", () => {
		expect(decodeSubject("=?UTF-8?B?5rWL6K+V?=")).toBe("测试");
		expect(decodeSubject("=?UTF-8?B?Y2Fmw6k=?=")).toBe("café");
	});

	it("Q (quoted-printable-like)", () => {
		expect(decodeSubject("=?UTF-8?Q?caf=C3=A9?=")).toBe("café");
		expect(decodeSubject("=?UTF-8?Q?=E6=B5=8B=E8=AF=95?=")).toBe("测试");
	});

	it("lower-case b and q, and lower-case hex digits in Q", () => {
		expect(decodeSubject("=?utf-8?b?5rWL6K+V?=")).toBe("测试");
		expect(decodeSubject("=?utf-8?q?caf=c3=a9?=")).toBe("café");
	});

	it("_ as a space in Q, =5F as a literal underscore", () => {
		expect(decodeSubject("=?UTF-8?Q?Hello_World?=")).toBe("Hello World");
		expect(decodeSubject("=?UTF-8?Q?snake=5Fcase_x?=")).toBe("snake_case x");
	});

	it("base64 without padding", () => {
		expect(decodeSubject("=?UTF-8?B?Y2Fmw6k?=")).toBe("café");
		expect(decodeSubject("=?UTF-8?B?YQ?=")).toBe("a");
		expect(decodeSubject("=?UTF-8?B?YWI?=")).toBe("ab");
	});

	it("an empty encoded-word", () => {
		expect(decodeSubject("a =?UTF-8?B??= b")).toBe("a  b");
		expect(decodeSubject("=?UTF-8?Q??=")).toBe("");
	});

	it("the charset with an RFC 2231 language suffix", () => {
		expect(decodeSubject("=?UTF-8*en?Q?Hello_World?=")).toBe("Hello World");
		expect(decodeSubject("=?UTF-8*zh-CN?B?5rWL6K+V?=")).toBe("测试");
	});

	it("GBK and GB2312", () => {
		// 测试 in GBK is B2 E2 CA D4.
		expect(decodeSubject("=?GBK?B?suLK1A==?=")).toBe("测试");
		expect(decodeSubject("=?gb2312?B?suLK1A==?=")).toBe("测试");
		expect(decodeSubject("=?GB2312?Q?=B2=E2=CA=D4?=")).toBe("测试");
	});

	it("charset names mailers use that the Encoding Standard does not list", () => {
		// PHP's mbstring and Windows code page names: 测试 in GBK, 測試 in Big5, 테스트 in UHC, テスト in CP932.
		expect(decodeSubject("=?CP936?B?suLK1A==?=")).toBe("测试");
		expect(decodeSubject("=?EUC-CN?B?suLK1A==?=")).toBe("测试");
		expect(decodeSubject("=?BIG-5?B?tPq41Q==?=")).toBe("測試");
		expect(decodeSubject("=?CP950?B?tPq41Q==?=")).toBe("測試");
		expect(decodeSubject("=?UHC?B?xde9usau?=")).toBe("테스트");
		expect(decodeSubject("=?CP949?B?xde9usau?=")).toBe("테스트");
		expect(decodeSubject("=?CP932?B?g2WDWINn?=")).toBe("テスト");
		expect(decodeSubject("=?SJIS-win?B?g2WDWINn?=")).toBe("テスト");
	});

	it("ISO-8859-1", () => {
		expect(decodeSubject("=?ISO-8859-1?Q?caf=E9?=")).toBe("café");
	});

	it("UTF-16 as RFC 2781 reads it: big-endian unless a byte order mark says otherwise", () => {
		// 测试 is 6D 4B 8B D5 in UTF-16BE; JavaMail's "UTF-16" starts each word with FE FF.
		expect(decodeSubject("=?UTF-16?B?/v9tS4vV?=")).toBe("测试");
		expect(decodeSubject("=?UTF-16?B?bUuL1Q==?=")).toBe("测试");
		expect(decodeSubject("=?utf-16?B?//5LbdWL?=")).toBe("测试");
		expect(decodeSubject("=?UTF-16?B?/v9tSw==?= =?UTF-16?B?/v+L1Q==?=")).toBe("测试");
		expect(decodeSubject("=?UTF-16BE?B?bUuL1Q==?=")).toBe("测试");
		expect(decodeSubject("=?UTF-16LE?B?S23Viw==?=")).toBe("测试");
	});

	it("drops a UTF-8 byte order mark", () => {
		expect(decodeSubject("=?UTF-8?B?77u/YQ==?=")).toBe("a");
	});
});

describe("decodeSubject joins adjacent encoded-words", () => {
	it("drops the white space between two encoded-words", () => {
		expect(decodeSubject("=?UTF-8?Q?a?= =?UTF-8?Q?b?=")).toBe("ab");
		expect(decodeSubject("=?UTF-8?Q?a?=\r\n =?UTF-8?Q?b?=\t=?UTF-8?Q?c?=")).toBe("abc");
		expect(decodeSubject("=?UTF-8?Q?a?==?UTF-8?Q?b?=")).toBe("ab");
	});

	it("keeps the white space between an encoded-word and plain text", () => {
		expect(decodeSubject("Re: =?UTF-8?B?5rWL6K+V?=")).toBe("Re: 测试");
		expect(decodeSubject("=?UTF-8?B?5rWL6K+V?= done")).toBe("测试 done");
		expect(decodeSubject("[x]  =?UTF-8?Q?a?=  [y]")).toBe("[x]  a  [y]");
		expect(decodeSubject("=?UTF-8?Q?a?= x =?UTF-8?Q?b?=")).toBe("a x b");
	});

	it("a multi-byte UTF-8 character split across two words", () => {
		// 测 is E6 B5 8B: "5rU=" is E6 B5, "iw==" is 8B.
		expect(decodeSubject("=?UTF-8?B?5rU=?= =?UTF-8?B?iw==?=")).toBe("测");
		expect(decodeSubject("=?UTF-8?Q?=E6=B5?= =?UTF-8?Q?=8B?=")).toBe("测");
		// Split across a B word and a Q word, charset names differing only in case.
		expect(decodeSubject("=?UTF-8?B?5rU=?= =?utf-8?Q?=8B=E8=AF=95?=")).toBe("测试");
	});

	it("a GBK character split across two words", () => {
		expect(decodeSubject("=?GBK?Q?=B2?= =?GBK?Q?=E2=CA=D4?=")).toBe("测试");
	});

	it("ISO-2022-JP words that each return to ASCII, as Japanese mailers split a long subject", () => {
		// テスト: each word opens with ESC $ B and closes with ESC ( B (RFC 1468, RFC 2047 6.3).
		expect(decodeSubject("=?ISO-2022-JP?B?GyRCJUYbKEI=?= =?ISO-2022-JP?B?GyRCJTklSBsoQg==?=")).toBe(
			"テスト",
		);
		expect(decodeSubject("=?ISO-2022-JP?B?GyRCJUYlOSVIGyhC?=")).toBe("テスト");
		// A word that leaves the JIS state open for the next one is still read whole.
		expect(decodeSubject("=?ISO-2022-JP?B?GyRCJUY=?= =?ISO-2022-JP?B?JTklSBsoQg==?=")).toBe(
			"テスト",
		);
	});

	it("words in different charsets next to each other", () => {
		expect(decodeSubject("=?UTF-8?B?5rWL?= =?GBK?B?ytQ=?=")).toBe("测试");
		expect(decodeSubject("=?GBK?B?suI=?= =?UTF-8?Q?=E8=AF=95?= =?ISO-8859-1?Q?=E9?=")).toBe(
			"测试é",
		);
		expect(decodeSubject("=?UTF-8?Q?a?= =?GBK?Q?b?= =?UTF-8?Q?c?=")).toBe("abc");
	});

	it("keeps plain text between words of different charsets", () => {
		expect(decodeSubject("=?UTF-8?B?5rWL?= - =?GBK?B?ytQ=?=")).toBe("测 - 试");
	});
});

describe("decodeSubject unfolds a folded subject (RFC 5322 2.2.3)", () => {
	it("drops the line break of a fold and keeps the white space after it", () => {
		expect(decodeSubject("=?UTF-8?B?5rWL6K+V?=\r\n tail")).toBe("测试 tail");
		expect(decodeSubject("Re:\r\n =?UTF-8?B?5rWL6K+V?=")).toBe("Re: 测试");
		expect(decodeSubject("a long\r\n\tsubject")).toBe("a long\tsubject");
		expect(decodeSubject("a long\n subject")).toBe("a long subject");
	});

	it("also when a word of the subject cannot be decoded", () => {
		expect(decodeSubject("Re:\r\n =?x-unknown?B?YQ==?=")).toBe("Re: =?x-unknown?B?YQ==?=");
	});

	it("keeps a line break that is not followed by white space", () => {
		expect(decodeSubject("a\r\nb")).toBe("a\r\nb");
	});
});

describe("decodeSubject leaves other subjects as received", () => {
	it.each([
		"plain subject",
		"",
		"  padded  ",
		"Price =? 5",
		"=?UTF-8?X?abc?=",
		"=?UTF-8?B?abc",
		"=?UTF-8?Q?a?b?=",
		"=?UTF-8?Q?has space?=",
	])("%j", (subject) => {
		expect(decodeSubject(subject)).toBe(subject);
	});

	it.each([
		["an unknown charset", "=?x-unknown?B?YQ==?="],
		["an unknown charset next to a good word", "=?UTF-8?Q?a?= =?x-unknown?Q?b?="],
		["broken base64 (bad character)", "=?UTF-8?B?Y!Fm?="],
		["broken base64 (impossible length)", "=?UTF-8?B?YWJjZ?="],
		["broken base64 (padding inside)", "=?UTF-8?B?YQ==YQ==?="],
		["base64url characters", "=?UTF-8?B?-_-_?="],
		["invalid UTF-8 bytes", "=?UTF-8?Q?=FF=FE?="],
		["a truncated UTF-8 sequence", "=?UTF-8?B?5rU=?="],
		["a split character with plain text between the halves", "=?UTF-8?B?5rU=?= x =?UTF-8?B?iw==?="],
		["invalid GBK bytes", "=?GBK?Q?=FF?="],
		["non-ASCII inside Q text", "=?UTF-8?Q?café?="],
		["a control character inside Q text", "=?UTF-8?Q?a\u0001b?="],
		["= followed by non-hex in Q", "=?UTF-8?Q?a=ZZb?="],
		["= followed by one hex digit at the end of Q", "=?UTF-8?Q?a=4?="],
		["a bad word among good ones", "Re: =?UTF-8?Q?ok?= =?UTF-8?Q?=G0?= tail"],
		["adjacent words of one charset, one of invalid bytes", "=?UTF-8?Q?ok?= =?UTF-8?Q?=FF?="],
	])("%s", (_, subject) => {
		expect(decodeSubject(subject)).toBe(subject);
	});
});
