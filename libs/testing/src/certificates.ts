import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Paths of PEM files a test made with openssl; every certificate is valid for one day. */
export interface TestCertificates {
  /** The temporary directory holding them all. */
  dir: string;
  /** The CA that signed the server and client certificates. */
  caCert: string;
  /** A server certificate for `localhost` and `127.0.0.1`, and its key. */
  serverCert: string;
  serverKey: string;
  /** A client certificate (CN `trellis-worker`, clientAuth), and its key. */
  clientCert: string;
  clientKey: string;
  /** Another CA, which signed nothing here: trusting it alone must fail every handshake. */
  otherCaCert: string;
  /** Removes the directory. */
  remove(): void;
}

/** Makes a CA, a server certificate for localhost/127.0.0.1, a client certificate and an unrelated CA (EC P-256). */
export async function makeTestCertificates(): Promise<TestCertificates> {
  const dir = mkdtempSync(join(tmpdir(), "trellis-certs-"));
  const path = (name: string) => join(dir, name);
  const openssl = async (args: string[]) => {
    try {
      await run("openssl", args, { timeout: 30_000 });
    } catch (error) {
      const e = error as { stderr?: string; message: string };
      throw new Error(`openssl ${args.join(" ")} failed: ${e.message}\n${e.stderr ?? ""}`);
    }
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  const ca = async (name: string) => {
    await openssl(
      ["req", "-x509", ...ec, "-keyout", path(`${name}.key`), "-out", path(`${name}.crt`)].concat([
        "-days",
        "1",
        "-subj",
        `/CN=${name}`,
      ]),
    );
  };
  const leaf = async (name: string, cn: string, extensions: string) => {
    writeFileSync(path(`${name}.ext`), extensions);
    await openssl([
      "req",
      "-new",
      ...ec,
      "-keyout",
      path(`${name}.key`),
      "-out",
      path(`${name}.csr`),
      "-subj",
      `/CN=${cn}`,
    ]);
    await openssl([
      "x509",
      "-req",
      "-in",
      path(`${name}.csr`),
      "-CA",
      path("ca.crt"),
      "-CAkey",
      path("ca.key"),
      "-CAcreateserial",
      "-days",
      "1",
      "-out",
      path(`${name}.crt`),
      "-extfile",
      path(`${name}.ext`),
    ]);
  };
  await ca("ca");
  await ca("other-ca");
  await leaf(
    "server",
    "localhost",
    "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
  );
  await leaf("client", "trellis-worker", "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n");
  return {
    dir,
    caCert: path("ca.crt"),
    serverCert: path("server.crt"),
    serverKey: path("server.key"),
    clientCert: path("client.crt"),
    clientKey: path("client.key"),
    otherCaCert: path("other-ca.crt"),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
