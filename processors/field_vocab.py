"""Reference vocabularies for semantic field types (processors/field_types.py): ISO 4217 currency
codes, ISO 3166-1 country codes, common English country names, street words, and the prototype
phrases each type's name is compared with. Plain data, written out by hand (no pycountry
dependency); lower-case sets, so look up ``value.strip().lower()``.
"""

from __future__ import annotations

# ISO 4217 active codes (2024), plus the precious metals / SDR codes that shops do send.
_CURRENCY_CODES = """
aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd btn bwp byn bzd
cad cdf chf clp cny cop crc cup cve czk djf dkk dop dzd egp ern etb eur fjd fkp gbp gel ghs gip gmd
gnf gtq gyd hkd hnl htg huf idr ils inr iqd irr isk jmd jod jpy kes kgs khr kmf kpw krw kwd kyd kzt
lak lbp lkr lrd lsl lyd mad mdl mga mkd mmk mnt mop mru mur mvr mwk mxn myr mzn nad ngn nio nok npr
nzd omr pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sdg sek sgd shp sle sll sos srd
ssp stn svc syp szl thb tjs tmt tnd top try ttd twd tzs uah ugx usd uyu uzs ves vnd vuv wst xaf xcd
xof xpf yer zar zmw zwl xau xag xdr
"""
CURRENCY_CODES = frozenset(_CURRENCY_CODES.split())

CURRENCY_SYMBOLS = frozenset({"$", "€", "£", "¥", "₹", "₽", "₩", "₺", "r$", "us$", "c$", "a$", "chf", "kr", "zł"})

# ISO 3166-1 alpha-2, plus "uk" and "eu" (not ISO, common in shop data).
_COUNTRY_ALPHA2 = """
ad ae af ag ai al am ao aq ar as at au aw ax az ba bb bd be bf bg bh bi bj bl bm bn bo bq br bs bt bv
bw by bz ca cc cd cf cg ch ci ck cl cm cn co cr cu cv cw cx cy cz de dj dk dm do dz ec ee eg eh er es
et fi fj fk fm fo fr ga gb gd ge gf gg gh gi gl gm gn gp gq gr gs gt gu gw gy hk hm hn hr ht hu id ie
il im in io iq ir is it je jm jo jp ke kg kh ki km kn kp kr kw ky kz la lb lc li lk lr ls lt lu lv ly
ma mc md me mf mg mh mk ml mm mn mo mp mq mr ms mt mu mv mw mx my mz na nc ne nf ng ni nl no np nr nu
nz om pa pe pf pg ph pk pl pm pn pr ps pt pw py qa re ro rs ru rw sa sb sc sd se sg sh si sj sk sl sm
sn so sr ss st sv sx sy sz tc td tf tg th tj tk tl tm tn to tr tt tv tw tz ua ug um us uy uz va vc ve
vg vi vn vu wf ws ye yt za zm zw uk eu
"""
COUNTRY_ALPHA2 = frozenset(_COUNTRY_ALPHA2.split())

# ISO 3166-1 alpha-3 of the countries that appear in e-commerce data most (not all 249).
_COUNTRY_ALPHA3 = """
usa can mex bra arg chl col per ury gbr irl fra deu nld bel lux che aut ita esp prt swe nor dnk fin
isl pol cze svk hun rou bgr grc tur rus ukr blr est lva ltu hrv svn srb bih alb mkd mne cyp mlt chn
jpn kor prk twn hkg mac ind pak bgd lka npl idn mys sgp tha vnm phl aus nzl zaf egy mar dza tun nga
gha ken eth tza uga sau are qat kwt bhr omn isr jor lbn irn irq kaz uzb ven ecu bol pry cri pan gtm
hnd slv nic dom cub jam tto pri
"""
COUNTRY_ALPHA3 = frozenset(_COUNTRY_ALPHA3.split())

_COUNTRY_NAMES = """
united states, united states of america, usa, u.s., america, canada, mexico, brazil, brasil, argentina,
chile, colombia, peru, uruguay, paraguay, bolivia, ecuador, venezuela, united kingdom, great britain,
england, scotland, wales, ireland, france, germany, deutschland, netherlands, the netherlands, holland,
belgium, luxembourg, switzerland, austria, italy, italia, spain, españa, portugal, sweden, norway,
denmark, finland, iceland, poland, czech republic, czechia, slovakia, hungary, romania, bulgaria,
greece, turkey, türkiye, russia, russian federation, ukraine, belarus, estonia, latvia, lithuania,
croatia, slovenia, serbia, bosnia and herzegovina, albania, north macedonia, montenegro, cyprus,
malta, china, japan, south korea, korea, north korea, taiwan, hong kong, macau, india, pakistan,
bangladesh, sri lanka, nepal, indonesia, malaysia, singapore, thailand, vietnam, viet nam,
philippines, australia, new zealand, south africa, egypt, morocco, algeria, tunisia, nigeria, ghana,
kenya, ethiopia, tanzania, uganda, saudi arabia, united arab emirates, uae, qatar, kuwait, bahrain,
oman, israel, jordan, lebanon, iran, iraq, kazakhstan, uzbekistan, costa rica, panama, guatemala,
honduras, el salvador, nicaragua, dominican republic, cuba, jamaica, trinidad and tobago, puerto rico
"""
COUNTRY_NAMES = frozenset(name.strip() for name in _COUNTRY_NAMES.split(","))

# Words that make a string with a number a street line rather than a product title.
_STREET_WORDS = """
st street ave avenue av av. rd road blvd boulevard ln lane dr drive way pkwy parkway pl place ct court
terrace ter hwy highway sq square loop suite ste apt apto flat floor unit rua avenida calle carrera
strasse straße str rue via viale piazza plaza alameda travessa rodovia st. ave. rd. dr.
"""
STREET_WORDS = frozenset(_STREET_WORDS.split())

# Short descriptions of each type, as a field might be named or described. The text model compares
# a field's name (and name + values) with these; without it, processors.field_types compares words.
PROTOTYPES: dict[str, tuple[str, ...]] = {
    "identifier": ("id", "identifier", "unique key", "reference number", "record id", "sequence number",
                   "line number", "seller id", "merchant id", "store id", "warehouse id", "supplier id",
                   "category id", "review id", "payment id", "shipment id", "coupon id", "campaign id"),
    "user_id": ("user id", "customer id", "buyer identifier", "account id", "visitor id", "client number",
                "shopper id"),
    "product_id": ("product id", "item id", "sku", "article number", "product code", "variant id",
                   "barcode ean upc"),
    "order_id": ("order id", "order number", "transaction id", "invoice number", "purchase id", "checkout id"),
    "session_id": ("session id", "visit id", "browser session identifier", "session key", "web session"),
    "price_amount": ("price", "amount of money", "total cost", "shipping fee", "revenue", "discount amount",
                     "unit price", "tax amount", "grand total"),
    "currency": ("currency", "currency code", "iso 4217 currency", "money unit"),
    "quantity": ("quantity", "number of items", "count", "weight in grams", "length in centimeters",
                 "size measurement", "number of days", "how many"),
    "rating": ("rating", "review score", "number of stars", "customer rating from 1 to 5", "satisfaction score"),
    "timestamp": ("timestamp", "date and time", "created at", "date", "time of the event", "last updated",
                  "delivery date", "birth date"),
    "product_title": ("product name", "product title", "item name", "name of the article", "listing title"),
    "category": ("category", "product category", "department", "taxonomy path", "catalog section",
                 "category name", "product type"),
    "brand": ("brand", "manufacturer", "vendor", "maker of the product", "brand name"),
    "free_text": ("comment", "review text", "message", "description", "customer note", "free text",
                  "review title", "feedback"),
    "url": ("url", "web address", "link", "image url", "web page", "website", "uri"),
    "email": ("email", "email address", "e-mail of the customer", "contact mail"),
    "phone": ("phone number", "telephone", "mobile number", "contact phone"),
    "person_name": ("person name", "first name", "last name", "full name", "customer name", "recipient name",
                    "surname"),
    "address": ("street address", "address line", "street and house number", "shipping address",
                "billing address"),
    "city": ("city", "town", "municipality", "city of the customer"),
    "region": ("state", "province", "region", "federal state", "county", "state code"),
    "zip_code": ("zip code", "postal code", "postcode", "zip"),
    "country": ("country", "country code", "nation", "country of residence"),
    "ip_address": ("ip address", "client ip", "remote address", "ipv4 address"),
    "boolean_flag": ("flag", "yes or no", "true or false", "is active", "has consented", "enabled", "opt in"),
    "enum_status": ("status", "state of the order", "type", "kind", "stage", "method", "mode", "action"),
    "geo_coordinate": ("latitude", "longitude", "geo coordinates", "gps location", "lat lng"),
}

TYPES: tuple[str, ...] = tuple(PROTOTYPES)  # the scored semantic types (processors/field_types.py)
ID_TYPES = frozenset({"identifier", "user_id", "product_id", "order_id", "session_id"})
