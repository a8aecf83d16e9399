// Verifies a proxy JWT with an independent library (jose) against the
// proxy's published JWK Set, as a separate resource server would.
// Usage: node verify-jwt.mjs <jwks_url> <issuer> <audience> <token>
// Prints the verified payload as JSON; exits 1 when verification fails.
import { createRemoteJWKSet, jwtVerify } from "jose";

const [jwksUrl, issuer, audience, token] = process.argv.slice(2);
try {
  const jwks = createRemoteJWKSet(new URL(jwksUrl));
  const { payload, protectedHeader } = await jwtVerify(token, jwks, { issuer, audience });
  console.log(JSON.stringify({ alg: protectedHeader.alg, kid: protectedHeader.kid, payload }));
} catch (error) {
  console.error(`verification failed: ${error.code ?? ""} ${error.message}`);
  process.exit(1);
}
