/* The finance stop-list: terms that carry a banking intent. */
#include <ctype.h>
#include <strings.h>
#include <string.h>

#include "augment/methods.h"

/* Longest first within a shared prefix does not matter: the longest match
 * at a position wins. Multi-word terms are written with single spaces. */
static const char *const terms[] = {
    "account", "accounts", "activate", "activation", "amount", "apple pay", "atm", "atms", "auto top-up",
    "auto top up", "balance", "bank", "bank transfer", "beneficiary", "bill", "blocked", "card", "cards",
    "card payment", "cash", "cashback", "charge", "charged", "charges", "cheque", "contactless", "credit",
    "credit card", "currency", "currencies", "debit", "debit card", "declined", "deposit", "direct debit",
    "disposable", "exchange", "exchange rate", "expired", "expiry", "fee", "fees", "fiat", "freeze",
    "frozen", "fund", "funds", "google pay", "iban", "identity", "interest", "limit", "loan", "mastercard",
    "mortgage", "overdraft", "payee", "payment", "payments", "paypal", "pending", "pin", "pins", "refund",
    "refunds", "reverted", "salary", "savings", "sepa", "sort code", "standing order", "statement", "swift",
    "top-up", "top-ups", "top up", "topped up", "topping up", "transaction", "transactions", "transfer",
    "transfers", "transferred", "verify", "verification", "virtual card", "visa", "wallet", "withdraw",
    "withdrawal", "withdrawals", "wire",
};

static int word_char(unsigned char c) { return isalnum(c) || c == '-' || c == '\'' || c >= 0x80; }

size_t finch_aug_protected_at(const char *text) {
  if (!text || !*text) return 0;
  size_t best = 0;
  /* Placeholders such as <CARD> are protected as a whole. */
  if (text[0] == '<') {
    const char *end = strchr(text, '>');
    if (end && end - text < 16) return (size_t)(end - text) + 1;
  }
  for (size_t i = 0; i < sizeof terms / sizeof terms[0]; i++) {
    size_t n = strlen(terms[i]);
    if (n > best && strncasecmp(text, terms[i], n) == 0 && !word_char((unsigned char)text[n])) best = n;
  }
  return best;
}
