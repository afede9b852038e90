import { addressKey } from "../../src/session/ledger/address-limit";
import { clientAddress } from "../../src/http/cloud-adapter";

describe("the caller's network address", () => {
  it("is the last X-Forwarded-For entry (what Google's front end appended), never one the client wrote before it", () => {
    expect(clientAddress("203.0.113.7", "10.0.0.1")).toBe("203.0.113.7");
    expect(clientAddress("1.2.3.4, 5.6.7.8, 203.0.113.7", "10.0.0.1")).toBe("203.0.113.7");
    expect(clientAddress(" 1.2.3.4 ,203.0.113.7 , ", "10.0.0.1")).toBe("203.0.113.7");
  });

  it("is the socket's peer without the header", () => {
    expect(clientAddress(undefined, "::1")).toBe("::1");
    expect(clientAddress("", "127.0.0.1")).toBe("127.0.0.1");
    expect(clientAddress(undefined, undefined)).toBeUndefined();
  });
});

describe("an address's bucket key", () => {
  it("is the same for an IPv4 address and its IPv6-mapped form", () => {
    expect(addressKey("::ffff:203.0.113.7")).toBe(addressKey("203.0.113.7"));
    expect(addressKey("203.0.113.7")).not.toBe(addressKey("203.0.113.8"));
  });

  it("counts an IPv6 address by its /64 network, however it is written", () => {
    const network = addressKey("2001:db8:85a3:1:aaaa:bbbb:cccc:dddd");
    expect(addressKey("2001:db8:85a3:1::1")).toBe(network);
    expect(addressKey("2001:0DB8:85A3:0001:0:0:0:2")).toBe(network);
    expect(addressKey("2001:db8:85a3:1::1%eth0")).toBe(network);
    expect(addressKey("2001:db8:85a3:2::1")).not.toBe(network);
    expect(addressKey("2001:db8::1")).toBe(addressKey("2001:db8:0:0:ffff::2"));
  });

  it("is a database key that reveals no address as such", () => {
    expect(addressKey("203.0.113.7")).toMatch(/^[0-9a-f]{40}$/);
  });
});
