"""Mints JWTs and JWKs for the integration tests with PyJWT, an
implementation independent of the Rust crate the gateway verifies with.

Reads a JSON list of jobs on stdin and prints one result per line:
  {"op": "mint", "alg": "RS256", "key": "<secret or PEM>", "claims": {...},
   "headers": {...}}                      a signed token
  {"op": "mint", "alg": "none", "claims": {...}}
                                          an unsigned token
  {"op": "hmac_with", "key": "<PEM text>", "claims": {...}}
                                          HS256 signed with the bytes of a
                                          public key (algorithm confusion)
  {"op": "jwk", "key": "<public PEM>", "kid": "a", "alg": "RS256"}
                                          the key as one JWK (JSON)
"""

import base64
import hashlib
import hmac
import json
import sys

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def run(job):
    op = job["op"]
    if op == "mint" and job["alg"] == "none":
        header = b64(json.dumps({"alg": "none", "typ": "JWT", **job.get("headers", {})}).encode())
        return header + "." + b64(json.dumps(job["claims"]).encode()) + "."
    if op == "mint":
        return jwt.encode(job["claims"], job["key"], algorithm=job["alg"], headers=job.get("headers"))
    if op == "hmac_with":
        # PyJWT refuses to do this on purpose, so it is done by hand.
        signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(
            json.dumps(job["claims"]).encode()
        )
        mac = hmac.new(job["key"].encode(), signing_input.encode(), hashlib.sha256).digest()
        return signing_input + "." + b64(mac)
    if op == "jwk":
        public = load_pem_public_key(job["key"].encode())
        if isinstance(public, rsa.RSAPublicKey):
            algo = jwt.algorithms.RSAAlgorithm
        elif isinstance(public, ec.EllipticCurvePublicKey):
            algo = jwt.algorithms.ECAlgorithm
        elif isinstance(public, ed25519.Ed25519PublicKey):
            algo = jwt.algorithms.OKPAlgorithm
        else:
            raise ValueError("unsupported key type")
        jwk = algo.to_jwk(public, as_dict=True)
        jwk.update({"kid": job["kid"], "alg": job["alg"], "use": "sig"})
        return json.dumps(jwk)
    raise ValueError("unknown op " + op)


for job in json.load(sys.stdin):
    print(run(job))
