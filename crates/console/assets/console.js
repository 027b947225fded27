// The console's only script: copy buttons, and the playground's streamed answers.
// Every page works without it (the playground then shows whole answers).
"use strict";

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  const status = button.parentElement.querySelector("[data-copied]");
  try {
    await navigator.clipboard.writeText(source.textContent.trim());
    if (status) status.textContent = "Copied.";
  } catch (e) {
    // No clipboard access (an insecure origin): select the text for Ctrl+C instead.
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    if (status) status.textContent = "Selected: press Ctrl+C (Cmd+C) to copy.";
  }
});

const playground = document.getElementById("playground");
if (playground) {
  const conversation = document.getElementById("conversation");
  const message = playground.elements.message;
  const history = playground.elements.history;
  const error = playground.querySelector("[data-error]");
  const send = playground.querySelector("button[type=submit]");

  const turn = (role, text) => {
    const item = document.createElement("li");
    item.className = "message " + role;
    const who = document.createElement("p");
    who.className = "muted";
    who.textContent = role;
    const body = document.createElement("p");
    body.className = "pre";
    body.textContent = text;
    item.append(who, body);
    conversation.append(item);
    return body;
  };

  playground.addEventListener("submit", async (event) => {
    event.preventDefault();
    const said = message.value;
    if (!said.trim()) return;
    error.hidden = true;
    send.disabled = true;
    const form = new FormData(playground);
    const asked = turn("user", said);
    const answer = turn("assistant", "");
    answer.setAttribute("aria-busy", "true");
    message.value = "";
    try {
      const response = await fetch(playground.dataset.stream, {
        method: "POST",
        body: new URLSearchParams(form),
        headers: { "x-csrf-token": form.get("csrf") },
        credentials: "same-origin",
      });
      if (response.redirected) {
        // Redirected to the sign-in page: the session ended.
        throw new Error("your session ended; reload the page and sign in again");
      }
      if (!response.ok) {
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        const why = page.querySelector("[role=alert]");
        throw new Error(why ? why.textContent : "the server answered " + response.status);
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        answer.textContent += decoder.decode(value, { stream: true });
      }
      const turns = history.value ? JSON.parse(history.value) : [];
      turns.push({ role: "user", content: said }, { role: "assistant", content: answer.textContent });
      history.value = JSON.stringify(turns);
    } catch (e) {
      answer.parentElement.remove();
      asked.parentElement.remove();
      error.textContent = "Could not send: " + e.message;
      error.hidden = false;
      message.value = said;
    } finally {
      answer.removeAttribute("aria-busy");
      send.disabled = false;
      message.focus();
    }
  });
}
