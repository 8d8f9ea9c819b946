// latchkey's passkey buttons: the security page's "Add a passkey" and the login page's "Sign in
// with a passkey". No framework: the browser's own WebAuthn JSON helpers
// (PublicKeyCredential.parseCreationOptionsFromJSON / parseRequestOptionsFromJSON, toJSON) and
// same-origin fetches to the JSON API, whose session cookies the browser keeps.
"use strict";
(function () {
  function supported() {
    return window.PublicKeyCredential &&
      typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function";
  }

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
    if (!response.ok) {
      throw new Error("HTTP " + response.status);
    }
    return response.status === 204 ? {} : response.json();
  }

  function fail(box, message) {
    const error = box.querySelector(".error");
    error.textContent = message;
    error.hidden = false;
  }

  const register = document.getElementById("passkey-register");
  if (register) {
    const button = document.getElementById("passkey-add");
    button.addEventListener("click", async function () {
      if (!supported()) {
        return fail(register, register.dataset.unsupported);
      }
      button.disabled = true;
      try {
        const start = await post("/auth/passkeys/register/start");
        const options = PublicKeyCredential.parseCreationOptionsFromJSON(start.publicKey);
        const credential = await navigator.credentials.create({ publicKey: options });
        const name = document.getElementById("passkey_name").value.trim();
        const body = { ceremony: start.ceremony, credential: credential.toJSON() };
        if (name) {
          body.name = name;
        }
        await post("/auth/passkeys/register/finish", body);
        window.location.assign("/account/security?notice=passkey_added");
      } catch (e) {
        fail(register, register.dataset.failed);
      } finally {
        button.disabled = false;
      }
    });
  }

  // A sign-in: passwordless on the login page, or the second factor of a login challenge on its
  // page (the box then carries the challenge's token, and the answer goes to /auth/mfa/verify).
  for (const box of document.querySelectorAll("[data-passkey-login]")) {
    const button = box.querySelector("button");
    if (!supported()) {
      box.hidden = true;
      continue;
    }
    button.addEventListener("click", async function () {
      button.disabled = true;
      const token = box.dataset.mfaToken;
      try {
        const start = await post("/auth/passkeys/login/start", token ? { mfa_token: token } : {});
        const options = PublicKeyCredential.parseRequestOptionsFromJSON(start.publicKey);
        const credential = await navigator.credentials.get({ publicKey: options });
        const answer = { ceremony: start.ceremony, credential: credential.toJSON() };
        if (token) {
          answer.mfa_token = token;
          await post("/auth/mfa/verify", answer);
        } else {
          await post("/auth/passkeys/login/finish", answer);
        }
        window.location.assign(box.dataset.next);
      } catch (e) {
        fail(box, box.dataset.failed);
      } finally {
        button.disabled = false;
      }
    });
  }
})();
