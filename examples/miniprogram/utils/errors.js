// The hub's errors, and the client library's own, as the user reads them: in Chinese, from
// one table. The English message (err.message, for people who read logs) goes to the
// console; the code (err.code, stable) picks the text.

const ERROR_TEXT = {
  // The hub's codes (docs/PROTOCOL.md, "error").
  bad_request: '请求格式有误',
  not_joined: '还没有登录',
  already_joined: '已经登录了',
  invalid_name: '这个名字不能用（1 到 64 个字符，首尾不能是空格）',
  invalid_group: '房间名不可用',
  not_found: '对方不在线',
  forbidden: '没有权限',
  unauthorized: '登录凭证无效或已过期',
  rate_limited: '发送太频繁，请稍后再试',
  overloaded: '服务器繁忙，请稍后再试',
  too_many_groups: '加入的房间太多了',
  too_large: '消息太长了',
  internal: '服务器出错了',
  // The client library's codes (clients/js/README.md, "Methods").
  timeout: '服务器没有及时回应',
  disconnected: '连接断开了',
  queue_full: '待发送的消息太多，请等网络恢复',
  closed: '连接已关闭',
  cancelled: '已取消',
};

/**
 * The Chinese text of `err` (an Error with a `code`). `overrides` gives a better text for
 * some codes where the page knows more (`not_found` of a direct message names the user).
 */
function errorText(err, overrides) {
  const code = err && err.code;
  if (overrides && overrides[code]) return overrides[code];
  if (ERROR_TEXT[code]) return ERROR_TEXT[code];
  return '出错了' + (code ? '（' + code + '）' : '');
}

/** Logs the English message and shows the Chinese text as a toast. */
function showError(err, overrides) {
  console.warn('wxhub:', (err && err.code) || 'error', (err && err.message) || String(err));
  wx.showToast({ title: errorText(err, overrides), icon: 'none' });
}

module.exports = { ERROR_TEXT, errorText, showError };
