// cardvault hosted card fields, for the shop's checkout page. No
// dependencies. CardVault.mount({frameUrl, element, onToken, onError})
// puts the vault's card frame into `element`; every message is checked
// against the frame's origin and window before `onToken({session, token,
// bin, last4, brand})` or `onError({code})` is called. Returns
// {submit(), unmount(), frame}. Confirm the token on your server with
// GET /v1/collect/sessions/{session}: trust that, not the page.
(function (root) {
  'use strict';
  function mount(options) {
    var url = new URL(options.frameUrl);
    if (url.protocol !== 'https:') throw new Error('cardvault: the frame URL must be https');
    var element = typeof options.element === 'string' ? document.querySelector(options.element) : options.element;
    if (!element) throw new Error('cardvault: no element to mount the card frame in');
    var frame = document.createElement('iframe');
    frame.src = url.href;
    frame.title = options.title || 'Card details';
    frame.referrerPolicy = 'no-referrer';
    frame.setAttribute('allow', '');
    frame.className = 'cardvault-frame';
    element.appendChild(frame);
    function onMessage(event) {
      if (event.origin !== url.origin || event.source !== frame.contentWindow) return;
      var m = event.data;
      if (!m || typeof m.type !== 'string') return;
      if (m.type === 'cardvault:tokenized' && options.onToken) {
        options.onToken({ session: m.session, token: m.token, bin: m.bin, last4: m.last4, brand: m.brand });
      } else if (m.type === 'cardvault:error' && options.onError) {
        options.onError({ code: String(m.code) });
      }
    }
    window.addEventListener('message', onMessage);
    return {
      frame: frame,
      submit: function () { frame.contentWindow.postMessage({ type: 'cardvault:submit' }, url.origin); },
      unmount: function () { window.removeEventListener('message', onMessage); frame.remove(); }
    };
  }
  root.CardVault = { mount: mount };
})(window);
