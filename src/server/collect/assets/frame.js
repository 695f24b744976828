// cardvault hosted card fields: the frame's script. Checks the card as it
// is typed, sends it to the vault (same origin), tells the parent page the
// token — only ever to the session's origin — and never the card number.
(function () {
  'use strict';
  var d = document.body.dataset;
  var origin = d.origin;
  var session = d.session;
  function tell(message) {
    if (window.parent !== window) window.parent.postMessage(message, origin);
  }
  if (d.state !== 'open') {
    tell({ type: 'cardvault:error', code: d.state });
    return;
  }
  var form = document.getElementById('card');
  var number = document.getElementById('number');
  var expiry = document.getElementById('expiry');
  var cvc = document.getElementById('cvc');
  var brand = document.getElementById('brand');
  var status = document.getElementById('status');
  var save = document.getElementById('save');
  var busy = false;

  function digits(s) { return s.replace(/\D/g, ''); }
  function luhn(n) {
    var sum = 0;
    for (var i = 0; i < n.length; i++) {
      var v = n.charCodeAt(n.length - 1 - i) - 48;
      if (i % 2) { v *= 2; if (v > 9) v -= 9; }
      sum += v;
    }
    return sum % 10 === 0;
  }
  function brandOf(n) {
    if (/^4/.test(n)) return 'Visa';
    if (/^(5[1-5]|222[1-9]|22[3-9]|2[3-6]|27[01]|2720)/.test(n)) return 'Mastercard';
    if (/^3[47]/.test(n)) return 'American Express';
    if (/^(6011|65|64[4-9])/.test(n)) return 'Discover';
    if (/^35(2[89]|[3-8])/.test(n)) return 'JCB';
    if (/^3(0[0-5]|[689])/.test(n)) return 'Diners Club';
    return '';
  }
  function show(input, message) {
    input.setAttribute('aria-invalid', message ? 'true' : 'false');
    document.getElementById(input.id + '-error').textContent = message;
  }
  function numberProblem(final) {
    var n = digits(number.value);
    if (!n) return final ? 'Enter the card number.' : '';
    if (n.length > 19) return 'A card number has at most 19 digits.';
    if (n.length < 12) return final ? 'A card number has at least 12 digits.' : '';
    if (!luhn(n)) return final || n.length >= 16 ? 'This card number is not valid.' : '';
    return '';
  }
  function expiryParts() {
    var m = /^(\d{2})\s*\/\s*(\d{2}|\d{4})$/.exec(expiry.value.trim());
    if (!m) return null;
    var year = m[2].length === 2 ? 2000 + Number(m[2]) : Number(m[2]);
    return { month: Number(m[1]), year: year };
  }
  function expiryProblem(final) {
    if (!expiry.value.trim()) return final ? 'Enter the expiry date.' : '';
    var e = expiryParts();
    if (!e) return final ? 'Write the expiry date as MM/YY.' : '';
    if (e.month < 1 || e.month > 12) return 'The month must be 01 to 12.';
    var now = new Date();
    if (e.year < now.getUTCFullYear() || (e.year === now.getUTCFullYear() && e.month < now.getUTCMonth() + 1)) {
      return 'This card has expired.';
    }
    return '';
  }
  function cvcProblem(final) {
    if (!cvc) return '';
    var c = cvc.value.trim();
    if (!c) return final && d.cvc === 'required' ? 'Enter the security code.' : '';
    if (!/^\d{3,4}$/.test(c)) return final || c.length > 4 ? 'The security code is 3 or 4 digits.' : '';
    return '';
  }

  number.addEventListener('input', function () {
    var n = digits(number.value).slice(0, 19);
    var grouped = n.replace(/(\d{4})(?=\d)/g, '$1 ');
    if (number.value !== grouped) number.value = grouped;
    var b = brandOf(n);
    brand.textContent = b ? 'Card type: ' + b : '';
    show(number, numberProblem(false));
  });
  number.addEventListener('blur', function () { if (number.value) show(number, numberProblem(true)); });
  expiry.addEventListener('input', function () {
    var v = expiry.value;
    if (/^\d{3,}$/.test(v)) expiry.value = v.slice(0, 2) + '/' + v.slice(2, 6);
    show(expiry, expiryProblem(false));
  });
  expiry.addEventListener('blur', function () { if (expiry.value) show(expiry, expiryProblem(true)); });
  if (cvc) {
    cvc.addEventListener('input', function () { show(cvc, cvcProblem(false)); });
    cvc.addEventListener('blur', function () { if (cvc.value) show(cvc, cvcProblem(true)); });
  }

  var messages = {
    session_completed: 'This card form was already used.',
    session_expired: 'This card form has expired. Reload the page to try again.',
    session_locked: 'This card form is locked after too many attempts.',
    rate_limited: 'Too many attempts. Wait a minute and try again.',
    card_refused: 'This card cannot be used here.',
    invalid_pan: 'This card number is not valid.',
    enumeration_suspected: 'This card cannot be used right now.'
  };

  function finish(ok, body) {
    busy = false;
    if (ok) {
      number.value = '';
      expiry.value = '';
      if (cvc) cvc.value = '';
      number.disabled = expiry.disabled = save.disabled = true;
      if (cvc) cvc.disabled = true;
      status.textContent = 'Card saved: ' + body.brand + ' ending in ' + body.last4 + '.';
      tell({ type: 'cardvault:tokenized', session: session, token: body.token, bin: body.bin, last4: body.last4, brand: body.brand });
      return;
    }
    var code = body && body.error && typeof body.error.code === 'string' ? body.error.code : 'unavailable';
    save.disabled = false;
    status.textContent = messages[code] || 'The card could not be saved. Try again.';
    tell({ type: 'cardvault:error', code: code });
  }

  form.addEventListener('submit', function (event) {
    event.preventDefault();
    if (busy) return;
    var problems = [[number, numberProblem(true)], [expiry, expiryProblem(true)]];
    if (cvc) problems.push([cvc, cvcProblem(true)]);
    var first = null;
    problems.forEach(function (p) { show(p[0], p[1]); if (p[1] && !first) first = p[0]; });
    if (first) { first.focus(); return; }
    busy = true;
    save.disabled = true;
    status.textContent = 'Saving the card…';
    var e = expiryParts();
    var body = JSON.stringify({
      nonce: d.nonce,
      number: digits(number.value),
      expiry: (e.month < 10 ? '0' : '') + e.month + '/' + e.year,
      code: cvc ? cvc.value.trim() : ''
    });
    fetch('/collect/v1/sessions/' + encodeURIComponent(session) + '/submit', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: body,
      credentials: 'omit',
      cache: 'no-store',
      referrerPolicy: 'no-referrer'
    }).then(function (r) {
      return r.json().then(function (b) { finish(r.ok, b); }, function () { finish(false, null); });
    }, function () { finish(false, null); });
  });

  window.addEventListener('message', function (event) {
    if (event.origin !== origin || event.source !== window.parent) return;
    if (event.data && event.data.type === 'cardvault:submit') form.requestSubmit();
  });
  // Only now can the form be sent (before, CSP form-action 'none' stops a
  // native submit anyway).
  save.disabled = false;
  document.body.setAttribute('data-ready', 'yes');
})();
